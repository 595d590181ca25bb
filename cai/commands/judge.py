"""`cai judge`: AI-labelled preference pairs from a run folder, or judge outside pairs."""

from __future__ import annotations

from pathlib import Path

import click

from cai.commands.options import echo_lines, engine_options


@click.command()
@click.argument("run_dir", required=False, type=click.Path(file_okay=False))
@click.option("--strategy", type=click.Choice(["revision", "samples"]), default=None, help="How pairs are formed [default: revision].")
@click.option("--pairs", "pairs_file", type=click.Path(dir_okay=False, exists=True), default=None, help="Judge pairs from a JSONL file instead of a run.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="With --pairs: where the judged rows go.")
@click.option("--judge-model", "model", default=None, help="Judge model name or folder [default: smollm2-135m].")
@engine_options
@click.option("--constitution", default=None, help="Comparison questions from this constitution [default: the run's, else bundled].")
@click.option("--ensemble", type=click.IntRange(1), default=None, help="Comparison questions per pair, averaged [default: 1].")
@click.option("--cot", is_flag=True, default=None, help="Rationale first, then clamped probabilities.")
@click.option("--threshold", type=click.FloatRange(0, 0.5, max_open=True), default=None, help="|p - 0.5| below this is a tie [default: 0.05].")
@click.option("--calibration", default=None, metavar="FILE|none",
              help="Labelled pairs ({id, prompt, response_a, response_b, label: a|b}) the judge is calibrated on "
                   "before judging, with its own settings [default: the bundled hard set, plus the easy tier].")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=None,
              help="Calibration agreement below which the judge is called close to chance [default: 0.6].")
@click.option("--strict", is_flag=True, default=None, help="Exit 1 before judging anything when the judge is below --min-agreement.")
@click.option("--seed", type=int, default=None)
@click.option("--templates", default=None, help="Folder of Jinja2 templates overriding the bundled ones.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help="YAML recipe with the same settings.")
@click.option("--force-new", is_flag=True, help="Judge RUN_DIR again from scratch: clears preferences.jsonl and ties.jsonl "
              "(needed when the judge settings differ from the run's earlier judging).")
@click.option("--progress/--no-progress", default=True)
def judge(run_dir, pairs_file, out, config_file, force_new, progress, **flags) -> None:
    """Label preference pairs with an AI judge (both orders, soft labels).

    RUN_DIR: a folder made by `cai generate`; writes RUN_DIR/preferences.jsonl.
    Or --pairs FILE --out FILE for rows {id, prompt, response_a, response_b}.
    """
    from cai.backends import load_backend
    from cai.config import JudgeSettings, load_config
    from cai.constitution import load_constitution
    from cai.errors import UsageError
    from cai.judge import Judge, JudgeConfig
    from cai.pairs import judge_pairs_file, judge_run, read_pairs
    from cai.prompts import Templates
    from cai.records import RunFolder

    if bool(run_dir) == bool(pairs_file):
        raise click.UsageError("give either RUN_DIR or --pairs FILE --out FILE")
    if pairs_file and not out:
        raise click.UsageError("--pairs needs --out FILE")
    if pairs_file and force_new:
        raise click.UsageError("--force-new applies to RUN_DIR; with --pairs, choose another --out to start over")
    cfg = load_config(JudgeSettings, config_file, flags)
    if pairs_file:
        read_pairs(Path(pairs_file))  # a bad row is reported before an engine spends a minute starting
    if cfg.calibration not in (None, "none", "default"):
        from cai.calibration import read_labelled_pairs, resolve_source

        read_labelled_pairs(resolve_source(cfg.calibration))
    if cfg.constitution:
        constitution = load_constitution(cfg.constitution)
    elif run_dir:
        info = RunFolder(run_dir).info()
        if not info:
            raise UsageError(f"{run_dir}: not a run folder (no run.yaml)")
        from cai.constitution import Constitution

        constitution = Constitution.model_validate(info["constitution"])
    else:
        constitution = load_constitution("default")
    backend = load_backend(cfg.backend, cfg.model, **cfg.backend_options())
    j = Judge(backend, constitution, JudgeConfig(ensemble=cfg.ensemble, cot=cfg.cot, threshold=cfg.threshold,
                                                 cot_max_tokens=cfg.cot_max_tokens, seed=cfg.seed),
              Templates(cfg.templates))
    if pairs_file:
        summary = judge_pairs_file(Path(pairs_file), Path(out), j, threshold=cfg.threshold,
                                   window=cfg.chunk_size, progress=progress, calibration=cfg.calibration,
                                   min_agreement=cfg.min_agreement, strict=cfg.strict)
        echo_lines(f"judge: wrote {out}", summary.lines())
    else:
        summary = judge_run(Path(run_dir), j, cfg.strategy, threshold=cfg.threshold, window=cfg.chunk_size,
                            progress=progress, force_new=force_new, calibration=cfg.calibration,
                            min_agreement=cfg.min_agreement, strict=cfg.strict)
        echo_lines(f"judge: wrote {Path(run_dir) / 'preferences.jsonl'}", summary.lines())
