"""`cai merge`: the shard folders of one sharded run into one run folder; `--shard I/N` for commands."""

from __future__ import annotations

import click

from cai.commands.options import echo_lines


class ShardParam(click.ParamType):
    """`--shard I/N`: shard I (counted from 0) of N, as cai.inputs.Shard."""

    name = "I/N"

    def convert(self, value, param, ctx):
        from cai.errors import UsageError
        from cai.inputs import parse_shard

        try:
            return parse_shard(value)
        except UsageError as exc:
            self.fail(str(exc).removeprefix(f"--shard {value!r}: "), param, ctx)


def shard_option(help: str = "Only shard I of N (counted from 0): the rows whose id hashes to I; N such jobs "
                             "run independently and `cai merge` joins their folders."):
    """--shard I/N, parsed to a cai.inputs.Shard (None when not given)."""
    return click.option("--shard", type=ShardParam(), default=None, metavar="I/N", help=help)


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="The merged run folder (new or empty).")
@click.option("--allow-partial", is_flag=True, default=False,
              help="Merge even when some shards of the N are missing (the merged run lacks their prompts; "
                   "`cai generate` with the same settings and --run-dir OUT fills them in).")
def merge(runs, out, allow_partial) -> None:
    """Merge the run folders of `cai generate --shard I/N` (or of `cai judge --shard I/N`) into OUT.

    The folders must share every setting, the constitution and the code version (exit 2 naming the
    keys that differ) and be distinct shards of one N, all of them unless --allow-partial. OUT gets
    every row once, in input order, and a run.yaml that `cai judge`, `cai export` and `cai view` take
    as any other.
    """
    from cai.merge import merge_runs

    summary = merge_runs(runs, out, allow_partial=allow_partial, log=lambda s: click.echo(s, err=True))
    echo_lines(f"merge: wrote {summary.out}", summary.lines())
