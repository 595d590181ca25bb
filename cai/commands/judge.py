"""`cai judge`: AI-labelled preference pairs from a run folder, or judge outside pairs."""

from __future__ import annotations

import click

from cai.commands.merge import shard_option
from cai.commands.options import chunk_size_option, echo_lines, engine_options
from cai.judge.figures import MIN_AGREEMENT, THRESHOLD
from cai.judge.modes import PAIRWISE_MODES


@click.command()
@click.argument("run_dir", required=False, type=click.Path(file_okay=False))
@click.option("--strategy", type=click.Choice(["revision", "samples"]), default=None, help="How pairs are formed [default: revision].")
@click.option("--pairs", "pairs_file", type=click.Path(dir_okay=False, exists=True), default=None, help="Judge pairs from a JSONL file instead of a run.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="With --pairs: where the judged rows go.")
@click.option("--judge-model", "model", default=None, help="Judge model name or folder [default: smollm2-135m].")
@engine_options
@click.option("--constitution", default=None, help="Comparison questions from this constitution [default: the run's, else bundled].")
@click.option("--ensemble", type=click.IntRange(1), default=None, help="Comparison questions per pair, averaged [default: 1].")
@click.option("--cot", is_flag=True, default=None, help="Rationale first, then clamped probabilities (--mode cot-clamped).")
@click.option("--mode", type=click.Choice(list(PAIRWISE_MODES)), default=None,
              help="How the judge is asked [default: logprobs, or cot-clamped with --cot].")
@click.option("--threshold", type=click.FloatRange(0, 0.5, max_open=True), default=None, help=f"|p - 0.5| below this is a tie [default: {THRESHOLD}].")
@click.option("--calibration", default=None, metavar="FILE|none",
              help="Labelled pairs ({id, prompt, response_a, response_b, label: a|b}) the judge is calibrated on "
                   "before judging, with its own settings [default: the bundled hard set, plus the easy tier].")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=None,
              help=f"Calibration agreement below which the judge is called close to chance [default: {MIN_AGREEMENT}].")
@click.option("--strict", is_flag=True, default=None, help="Exit 1 before judging anything when the judge is below --min-agreement.")
@chunk_size_option("Pairs in flight at once; auto sizes it from the judge's engine, as `cai generate` does "
                   "[default: auto].")
@click.option("--seed", type=int, default=None)
@click.option("--templates", default=None, help="Folder of Jinja2 templates overriding the bundled ones.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help="YAML recipe with the same settings.")
@click.option("--force-new", is_flag=True, default=None, help="Judge RUN_DIR again from scratch: clears preferences.jsonl and "
              "ties.jsonl (needed when the judge settings differ from the run's earlier judging).")
@shard_option("Judge only shard I of N (counted from 0) of RUN_DIR's pairs, by their ids; each job judges its own "
              "copy of the run folder and `cai merge` joins them.")
@click.option("--progress/--no-progress", default=True)
def judge(run_dir, pairs_file, config_file, progress, shard, **flags) -> None:
    """Label preference pairs with an AI judge (both orders, soft labels).

    RUN_DIR: a folder made by `cai generate`; writes RUN_DIR/preferences.jsonl.
    Or --pairs FILE --out FILE for rows {id, prompt, response_a, response_b}.
    """
    from pathlib import Path

    from cai.config import load_config
    from cai.pairs import JudgeRunConfig, run_judge

    cfg = load_config(JudgeRunConfig, config_file, {**flags, "run_dir": run_dir, "pairs": pairs_file,
                                                    "shard": str(shard) if shard else None})
    summary = run_judge(cfg, progress=progress)
    wrote = cfg.out if cfg.pairs else Path(cfg.run_dir) / "preferences.jsonl"
    echo_lines(f"judge: wrote {wrote}", summary.lines())
