"""`cai demo`: the whole loop on the bundled defaults, in one command.

generate (critique → revision rounds) → judge → export → SFT → DPO → eval (aligned vs base).
Each stage writes into OUT, so a rerun resumes the data stages and the printout says where
everything is. Sized to finish in about a quarter of an hour on a laptop-class CPU.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from cai.models import DEFAULT_MODEL


@click.command()
@click.option("--out", default="runs/demo", show_default=True, type=click.Path(file_okay=False), help="Where every output goes.")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Policy (and judge) model.")
@click.option("--backend", type=click.Choice(["vllm", "hf"]), default=None, help="Inference engine [default: vllm where installed].")
@click.option("--limit", type=click.IntRange(2), default=48, show_default=True, help="Training prompts from the bundled set.")
@click.option("--rounds", type=click.IntRange(1), default=2, show_default=True)
@click.option("--eval-limit", type=click.IntRange(2), default=32, show_default=True, help="Held-out evaluation prompts.")
@click.option("--sft-steps", type=click.IntRange(1), default=12, show_default=True)
@click.option("--dpo-steps", type=click.IntRange(1), default=12, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
def demo(out, model, backend, limit, rounds, eval_limit, sft_steps, dpo_steps, seed) -> None:
    """Run the whole loop on the bundled constitution, prompts and default model."""
    from cai.config import GenerateConfig, JudgeSettings
    from cai.constitution import load_constitution
    from cai.evaluate import EvalConfig, run_eval
    from cai.export import export
    from cai.generate import run_generate
    from cai.judge import Judge, JudgeConfig
    from cai.backends import load_backend
    from cai.pairs import judge_run
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
    gcfg = GenerateConfig(model=model, backend=backend, limit=limit, rounds=rounds, seed=seed, run_dir=str(run_dir))
    gsum = run_generate(gcfg)
    took("generate", t0)
    for line in gsum.lines():
        click.echo("  " + line)

    step("2/6 judge: revision vs initial answer, both orders, soft labels")
    t0 = time.perf_counter()
    jset = JudgeSettings(model=model, backend=backend, seed=seed)
    judge = Judge(load_backend(jset.backend, jset.model, **jset.backend_options()), load_constitution("default"),
                  JudgeConfig(threshold=jset.threshold, seed=seed))
    jsum = judge_run(run_dir, judge, "revision", threshold=jset.threshold)
    took("judge", t0)
    for line in jsum.lines():
        click.echo("  " + line)

    step("3/6 export: SFT and DPO data")
    sft = export(run_dir, "sft", "jsonl", out / "data" / "sft.jsonl")
    dpo = export(run_dir, "dpo", "jsonl", out / "data" / "dpo.jsonl")
    click.echo(f"  {sft['rows']} SFT rows -> {sft['path']}\n  {dpo['rows']} DPO pairs -> {dpo['path']}")

    step(f"4/6 train SFT ({sft_steps} steps, LoRA, merged)")
    t0 = time.perf_counter()
    sft_dir = out / "sft"
    sft_metrics = run_stage("sft", sft["path"], model, sft_dir, overrides={"max_steps": sft_steps, "seed": seed})
    took("sft", t0)
    click.echo(f"  model -> {sft_dir}  {_fmt(sft_metrics)}")

    step(f"5/6 train DPO on the SFT model ({dpo_steps} steps)")
    t0 = time.perf_counter()
    dpo_dir = out / "dpo"
    if dpo["rows"] >= 2:
        dpo_metrics = run_stage("dpo", dpo["path"], str(sft_dir), dpo_dir, overrides={"max_steps": dpo_steps, "seed": seed})
        aligned = dpo_dir
        click.echo(f"  model -> {dpo_dir}  {_fmt(dpo_metrics)}")
    else:
        aligned = sft_dir
        click.echo("  fewer than 2 preference pairs (all ties?): skipped; evaluating the SFT model")
    took("dpo", t0)

    step(f"6/6 eval: aligned vs base on {eval_limit} held-out prompts")
    t0 = time.perf_counter()
    metrics = run_eval(EvalConfig(model=str(aligned), baseline=model, judge_model=model, backend=backend,
                                  limit=eval_limit, out=str(out / "eval"), seed=seed))
    took("eval", t0)

    total = time.perf_counter() - t_start
    click.echo(click.style("\n== done", bold=True))
    lo, hi = metrics["win_rate_ci"]
    click.echo(f"  win rate aligned vs base  {metrics['win_rate']:.3f}  (95% CI {lo:.3f}-{hi:.3f}, n={metrics['n']})")
    for name, m in (metrics.get("models") or {}).items():
        click.echo(f"  {name:<8} refusals on harmful {m.get('refusal_rate_harmful', float('nan')):.2f}, "
                   f"over-refusals on benign {m.get('over_refusal_rate_benign', float('nan')):.2f}")
    click.echo(f"  outputs: run {run_dir}, data {out / 'data'}, models {sft_dir} {dpo_dir}, report {out / 'eval' / 'report.md'}")
    click.echo("  time: " + ", ".join(f"{k} {v:.0f}s" for k, v in times.items()) + f"; total {total / 60:.1f} min")


def _fmt(metrics: dict) -> str:
    keys = ("first_loss", "last_loss", "reward_margin_first", "reward_margin_last", "eval_accuracy")
    return " ".join(f"{k}={metrics[k]:.3f}" for k in keys if isinstance(metrics.get(k), (int, float)))
