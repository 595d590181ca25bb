"""`cai demo`: the whole loop on the bundled defaults, in one command.

generate (critique → revision rounds) → judge → export → SFT → DPO → eval (aligned vs base).
Each stage writes into OUT, so a rerun resumes the data stages and the printout says where
everything is. Sized to finish in about a quarter of an hour on a laptop-class CPU.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from cai.commands.options import backend_choice, vllm_engine_options
from cai.models import DEFAULT_MODEL


@click.command()
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False), help="Where every output goes.")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Policy (and judge) model.")
@click.option("--backend", type=backend_choice(local=True), default=None, help="Inference engine [default: vllm where installed].")
@vllm_engine_options
@click.option("--limit", type=click.IntRange(2), default=48, show_default=True, help="Training prompts from the bundled set.")
@click.option("--rounds", type=click.IntRange(1), default=2, show_default=True)
@click.option("--eval-limit", type=click.IntRange(2), default=32, show_default=True, help="Held-out evaluation prompts.")
@click.option("--sft-steps", type=click.IntRange(1), default=12, show_default=True)
@click.option("--dpo-steps", type=click.IntRange(1), default=12, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def demo(out, model, backend, limit, rounds, eval_limit, sft_steps, dpo_steps, seed, **engine) -> None:
    """Run the whole loop on the bundled constitution, prompts and default model."""
    from cai.config import GenerateConfig
    from cai.evaluate import EvalConfig, run_eval
    from cai.export import export
    from cai.generate import run_generate
    from cai.pairs import JudgeRunConfig, run_judge
    from cai.train import run_stage

    out = Path(out)
    run_dir = out / "run"
    t_start = time.perf_counter()
    times: dict[str, float] = {}

    def step(name: str) -> None:
        click.echo(click.style(f"\n== {name}", bold=True))

    def took(name: str, t0: float) -> None:
        times[name] = time.perf_counter() - t0

    step(f"1/6 generate: {limit} prompts, answer + {rounds} critique → revision rounds")
    t0 = time.perf_counter()
    engine = {k: v for k, v in engine.items() if v is not None}  # vLLM's settings, for every stage's engine
    from cai.inputs import eval_prompts_path

    # The eval below measures the aligned model on the bundled eval prompts: none of them is trained on.
    gcfg = GenerateConfig(**engine, model=model, backend=backend, limit=limit, rounds=rounds, seed=seed,
                          run_dir=str(run_dir), decontaminate=[str(eval_prompts_path())])
    gsum = run_generate(gcfg)
    took("generate", t0)
    for line in gsum.lines():
        click.echo("  " + line)

    step("2/6 judge: revision vs initial answer, both orders, soft labels")
    t0 = time.perf_counter()
    # The run's own constitution (the bundled default) judges it, by the rule every judge follows.
    jsum = run_judge(JudgeRunConfig(**engine, model=model, backend=backend, seed=seed, run_dir=str(run_dir)))
    took("judge", t0)
    for line in jsum.lines():
        click.echo("  " + line)

    step("3/6 export: SFT (final revisions the judge preferred, unflagged) and DPO data (unflagged chosen)")
    sft = _export_or_none(export, run_dir, "sft", out / "data" / "sft.jsonl", filter="judged")
    dpo = _export_or_none(export, run_dir, "dpo", out / "data" / "dpo.jsonl")
    unfiltered: list[str] = []
    # Too little passed to train on: train on everything anyway, so the demo still shows the whole
    # loop, and say plainly that such a model is not evidence of anything.
    if sft["rows"] < 2:
        sft = _export_or_none(export, run_dir, "sft", out / "data" / "sft_unfiltered.jsonl", keep_flagged=True)
        unfiltered.append("SFT")
    if dpo["rows"] < 2:
        dpo = _export_or_none(export, run_dir, "dpo", out / "data" / "dpo_unfiltered.jsonl", keep_flagged=True)
        unfiltered.append("DPO")
    for name, stats in (("SFT rows", sft), ("DPO pairs", dpo)):
        if stats["rows"]:
            click.echo(f"  {stats['rows']} {name} -> {stats['path']}")
        for line in stats["left_out"].lines():
            click.echo(f"    {line}")
    if unfiltered:
        click.echo(f"  too few rows passed the quality checks and the judge to train {' and '.join(unfiltered)} on: "
                   "the demo trains on the unfiltered rows to show the loop end to end; a model trained on them "
                   "is not evidence of anything")
    cards = dict.fromkeys(s["card"] for s in (sft, dpo) if s.get("card"))
    if cards:
        click.echo("  dataset card -> " + ", ".join(cards))

    def train(stage: str, data: dict, start: str, folder: Path, steps: int, skipped: str) -> dict:
        """One training stage of the demo, or a line saying why it was skipped."""
        t0 = time.perf_counter()
        metrics: dict = {}
        if data["rows"] >= 2:
            metrics = run_stage(stage, data["path"], start, folder, overrides={"max_steps": steps, "seed": seed})
            click.echo(f"  model -> {folder}  {train_figures(metrics)}")
        else:
            click.echo(f"  {skipped}: skipped")
        took(stage, t0)
        return metrics

    step(f"4/6 train SFT ({sft_steps} steps, LoRA, merged)")
    sft_dir, dpo_dir = out / "sft", out / "dpo"
    sft_metrics = train("sft", sft, model, sft_dir, sft_steps, "fewer than 2 SFT rows; DPO starts from the base model")
    start = str(sft_dir) if sft_metrics else model
    step(f"5/6 train DPO on the SFT model ({dpo_steps} steps)")
    dpo_metrics = train("dpo", dpo, start, dpo_dir, dpo_steps, "fewer than 2 preference pairs (all ties?)")
    aligned = str(dpo_dir) if dpo_metrics else start
    if aligned == model:
        click.echo(click.style("\n== done: nothing to train on", bold=True))
        for line in quality_lines(gsum, jsum):
            click.echo("  " + line)
        return

    step(f"6/6 eval: aligned vs base on {eval_limit} held-out prompts")
    t0 = time.perf_counter()
    metrics = run_eval(EvalConfig(**engine, model=str(aligned), baseline=model, judge_model=model, backend=backend,
                                  limit=eval_limit, out=str(out / "eval"), seed=seed))
    took("eval", t0)

    total = time.perf_counter() - t_start
    click.echo(click.style("\n== done", bold=True))
    for line in quality_lines(gsum, jsum) + headline_lines(sft_metrics, dpo_metrics, metrics, model=model):
        click.echo("  " + line)
    if unfiltered:
        click.echo(f"  {' and '.join(unfiltered)} trained on unfiltered rows (too few passed the checks and the judge)")
    click.echo(f"  outputs: run {run_dir}, data {out / 'data'}, models {sft_dir} {dpo_dir}, report {out / 'eval' / 'report.md'}")
    click.echo("  time: " + ", ".join(f"{k} {v:.0f}s" for k, v in times.items()) + f"; total {total / 60:.1f} min")


def _export_or_none(export, run_dir, fmt, path, **kw) -> dict:
    """An export, or an empty one when every row was left out (the demo says so and goes on)."""
    from cai.export import LeftOut, build_rows

    left = LeftOut()
    if fmt == "dpo" and not (Path(run_dir) / "preferences.jsonl").exists():
        return {"rows": 0, "path": str(path), "left_out": left, "card": None}
    if not build_rows(run_dir, fmt, left_out=left, **kw):
        return {"rows": 0, "path": str(path), "left_out": left, "card": None}
    return export(run_dir, fmt, "jsonl", path, **kw)


def quality_lines(gsum, jsum) -> list[str]:
    """What the demo's data is worth: flags by kind, the judge's calibration and its length bias."""
    from cai.quality import flag_line

    lines = [f"flags    {flag_line(gsum.flag_counts)}  ({gsum.flag_counts.get('_excluded', 0)} of "
             f"{gsum.rows_total} final answers flagged: kept out of training)"]
    cal = jsum.calibration or {}
    if cal.get("agreement") is not None:
        bias = (jsum.stats or {}).get("longer_wins")
        lines.append(f"judge    calibration agreement {_num(cal['agreement'])} on {cal['n']} hard labelled pairs "
                     f"(floor {_num(cal.get('min_agreement'))}; 0.5 is chance), longer answer wins "
                     f"{_num(cal.get('longer_wins'))} of its decided calibration pairs and {_num(bias)} on this run")
    return lines


def _num(x) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) else "n/a"


def train_figures(metrics: dict) -> str:
    """A stage's learning in one line, from the names cai/train/output.py:summarize gives them."""
    parts = []
    for name, label in (("loss", "loss"), ("reward_margin", "reward margin"), ("reward_accuracy", "reward accuracy")):
        first, last = metrics.get(f"first_{name}"), metrics.get(f"last_{name}")
        if isinstance(first, (int, float)) and isinstance(last, (int, float)):
            parts.append(f"{label} {first:.3f} → {last:.3f}")
    if isinstance(metrics.get("heldout_accuracy"), (int, float)):
        parts.append(f"held-out accuracy {metrics['heldout_accuracy']:.3f} on {metrics.get('heldout_pairs', '?')} pairs")
    return ", ".join(parts)


def headline_lines(sft: dict, dpo: dict, ev: dict, model: str = DEFAULT_MODEL) -> list[str]:
    """The demo's closing figures: what each training stage learned, then aligned vs base."""
    lines = []
    if sft:
        lines.append(f"SFT  {train_figures(sft) or 'no figures logged'}")
    lines.append(f"DPO  {train_figures(dpo) or 'no figures logged'}" if dpo else "DPO  skipped (fewer than 2 pairs)")
    lo, hi = ev.get("win_rate_ci") or (None, None)
    if ev.get("signal", True):
        lines.append(f"win rate aligned vs base  {_num(ev.get('win_rate'))}  (95% CI {_num(lo)}-{_num(hi)}, n={ev.get('n', '?')})")
    else:
        lines.append("win rate aligned vs base  no signal: " + "; ".join(ev.get("signal_reasons") or [])
                     + f" (measured {_num(ev.get('win_rate'))}, n={ev.get('n', '?')}: noise, not a finding)")
    reader = "phrase detector" if ev.get("refusal_reader") == "phrases" else "judge model"
    lines.append(f"harmlessness (refuses harmful)  aligned {_num(ev.get('harmlessness'))}, "
                 f"base {_num(ev.get('harmlessness_baseline'))}  (read by the {reader})")
    lines.append(f"over-refusal (refuses benign)   aligned {_num(ev.get('over_refusal'))}, "
                 f"base {_num(ev.get('over_refusal_baseline'))}")
    if not ev.get("signal", True):
        who = (f"the default {DEFAULT_MODEL} model is too small" if model == DEFAULT_MODEL
               else f"{model} is too weak")
        lines.append(f"no signal: {who} to critique or judge its own answers. Bring a bigger one: "
                     "cai demo --model DIR (any local Hugging Face folder; it is the policy and the judge)")
    return lines
