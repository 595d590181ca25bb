"""`cai iterate`: iterated RLAIF, K rounds of generate → judge → train → eval, resumable, as a curve."""

from __future__ import annotations

import click

from cai.commands.options import backend_choice


@click.command()
@click.option("--iterations", type=click.IntRange(1), default=None, help="Iterations to have finished [default: 2]; "
              "a rerun with a larger K continues the series.")
@click.option("--model", default=None, help="Starting policy, also every eval's baseline [default: smollm2-135m].")
@click.option("--constitution", default=None, help="Bundled constitution name or YAML path [default: default].")
@click.option("--prompts", default=None, help="Training prompts, taken in disjoint slices [default: bundled red-team set].")
@click.option("--per-iteration", type=click.IntRange(1), default=None, help="Prompts per iteration [default: 16].")
@click.option("--method", type=click.Choice(["dpo", "kto"]), default=None, help="Preference training [default: dpo].")
@click.option("--strategy", type=click.Choice(["revision", "samples"]), default=None,
              help="Pairs: revision vs initial answer, or sampled answers [default: revision].")
@click.option("--samples", type=click.IntRange(2), default=None, help="Answers per prompt with --strategy samples [default: 2].")
@click.option("--rounds", type=click.IntRange(0), default=None, help="Critique → revision rounds [default: 1].")
@click.option("--reference", type=click.Choice(["base", "previous"]), default=None,
              help="Training reference: the starting model or the previous policy [default: base].")
@click.option("--eval-prompts", default=None, help="Held-out prompts, the same every iteration [default: bundled eval set].")
@click.option("--decontaminate", multiple=True, type=click.Path(exists=True), default=None,
              help="More prompt sets no training prompt may overlap (repeatable); the eval prompts always are.")
@click.option("--eval-limit", type=click.IntRange(2), default=None, help="Held-out prompts evaluated [default: 16].")
@click.option("--judge-model", default=None, help="The judge of every iteration [default: the starting model].")
@click.option("--train-steps", type=click.IntRange(1), default=None, help="Optimizer steps per iteration [default: 8].")
@click.option("--backend", type=backend_choice(), default=None, help="Inference engine [default: vllm where it imports].")
@click.option("--seed", type=int, default=None, help="Seed of sampling and training [default: 0].")
@click.option("--out", default=None, type=click.Path(file_okay=False), help="Output folder [default: runs/iterate].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML recipe: these settings, plus generate:, judge:, train: and eval: sections (each checked "
              "before anything runs; a key the top-level settings set is refused there); flags override it.")
@click.option("--force-new", is_flag=True, default=None,
              help="Redo the unfinished iteration from scratch (finished iterations are kept). Without it a rerun "
              "reuses each finished step whose settings are the same and redoes the first changed one and the "
              "steps after it.")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
def iterate(progress, config_file, **flags) -> None:
    """Iterated RLAIF: each iteration's policy answers fresh prompts, the same judge labels them, the
    policy trains on them, and an eval against the starting model adds a point to the curve."""
    from pathlib import Path

    from cai.config import load_config
    from cai.iterate import CURVE, HISTORY, REPORT, IterateConfig, row_line, run_iterate

    flags["decontaminate"] = list(flags.get("decontaminate") or []) or None  # unset: the recipe's, else none more
    cfg = load_config(IterateConfig, config_file, flags)
    rows = run_iterate(cfg, progress=progress, log=lambda msg: click.echo(msg, err=True), source=config_file)
    out = Path(cfg.out)
    click.echo(click.style(f"iterate: {len(rows)} of {cfg.iterations} iterations done", bold=True))
    for r in rows:
        click.echo(f"  {r['iteration']}: {row_line(r)}")
    click.echo(f"  history {out / HISTORY}, curve {out / CURVE}, report {out / REPORT}")
