"""`cai eval`: judge model A against a baseline B on held-out prompts."""

from __future__ import annotations

import click

from cai.commands.options import chunk_size_option, echo_lines, engine_options
from cai.judge.figures import MIN_AGREEMENT, THRESHOLD
from cai.judge.modes import PAIRWISE_MODES


@click.command(name="eval")
@click.option("--model", default=None, help="Model A (evaluated): a model name or a local folder, e.g. one `cai train` wrote.")
@click.option("--baseline", default=None, help="Model B (compared against) [default: smollm2-135m].")
@click.option("--judge-model", default=None, help="Judge of pairs and refusals [default: the baseline].")
@click.option("--prompts", default=None, help="Held-out prompt set [default: the bundled eval set].")
@click.option("--prompt-field", default=None, help="Column/field holding the prompt [default: prompt].")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N prompts.")
@click.option("--out", default=None, help="Output folder [default: runs/eval-<model>-vs-<baseline>].")
@engine_options
@click.option("--max-tokens", type=click.IntRange(1), default=None, help="Answer length limit [default: 160].")
@click.option("--temperature", type=click.FloatRange(0), default=None, help="Answer sampling [default: 0, greedy].")
@click.option("--seed", type=int, default=None, help="Sampling and bootstrap seed [default: 0].")
@click.option("--constitution", default=None, help="Source of the judge's comparison questions [default: default].")
@click.option("--ensemble", type=click.IntRange(1), default=None, help="Comparison questions per pair [default: 1].")
@click.option("--cot", is_flag=True, default=None, help="Judge writes a rationale first; clamped probabilities "
              "(--judge-mode cot-clamped).")
@click.option("--judge-mode", type=click.Choice(list(PAIRWISE_MODES)), default=None,
              help="How the judge is asked [default: logprobs, or cot-clamped with --cot].")
@click.option("--threshold", type=click.FloatRange(0, 0.5, max_open=True), default=None, help=f"|p_a - 0.5| below this is a tie [default: {THRESHOLD}].")
@click.option("--calibration", default=None, metavar="FILE|none",
              help="Labelled pairs the judge is calibrated on first [default: the bundled hard set].")
@click.option("--refusal-calibration", default=None, metavar="FILE|none",
              help="Answers labelled {prompt, answer, refuses} the refusal call is calibrated on [default: bundled].")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=None,
              help=f"Calibration agreement below which a judge's calls are not used as a finding [default: {MIN_AGREEMENT}].")
@click.option("--compliance", default=None, metavar="IDS|none",
              help="Principles whose compliance the judge rates, comma-separated ids [default: every principle]; "
                   "none skips it.")
@click.option("--compliance-limit", type=click.IntRange(1), default=None, metavar="N",
              help="Answers per model asked about per principle [default: 16]. Each costs 2 judge calls (both "
                   "option orders), so the judge makes principles x N x 4 calls in all.")
@click.option("--history", "history_file", type=click.Path(dir_okay=False), default=None, metavar="FILE.jsonl",
              help="Append this evaluation's headline figures to FILE and redraw FILE's plot (FILE.png) beside it.")
@click.option("--on-bad-row", type=click.Choice(["skip", "fail"]), default=None, help="What a bad prompt row does [default: fail].")
@click.option("--templates", default=None, help="Folder of Jinja2 templates overriding the bundled ones.")
@chunk_size_option("Requests per engine call (in flight at once); auto sizes it for each engine from its "
                   "capacity, as `cai generate` does [default: auto].")
@click.option("--examples", type=click.IntRange(0), default=None, help="Side-by-side examples in report.md [default: 3].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None, help="YAML recipe with the same settings; flags override it.")
@click.option("--progress/--no-progress", default=True, help="Show progress bars.")
def eval_(config_file, progress, history_file, **flags) -> None:
    """Compare model A with baseline B: pairwise win rate, refusals, over-refusals.

    Writes OUT/metrics.json, report.md, win_rates.png and answers.jsonl.
    """
    from cai.config import load_config
    from cai.evaluate import EvalConfig, headline, run_eval

    if not flags.get("model") and not config_file:
        raise click.UsageError("--model is required")
    cfg = load_config(EvalConfig, config_file, flags)
    metrics = run_eval(cfg, progress=progress)
    lines = headline(metrics)
    if history_file:
        from pathlib import Path

        from cai import history

        path = Path(history_file)
        history.append(path, history.headline(metrics))
        rows = history.read(path)
        history.plot(rows, path.with_suffix(".png"), title=f"cai eval history ({len(rows)} evaluations)")
        lines.append(f"history: {len(rows)} evaluations in {path}, plot {path.with_suffix('.png')}")
    echo_lines(f"eval: wrote {metrics['out']}/ (metrics.json, report.md, win_rates.png, answers.jsonl)", lines)
