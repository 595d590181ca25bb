"""The output folder of a stage: preparing it, the logs, metrics.json and recipe.yaml, the summary lines."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from cai.errors import UsageError
from cai.train.settings import Recipe
from cai.train.weights import ADAPTER

CHECKPOINTS = "checkpoints"
METRICS = "metrics.json"
LOG = "train_log.jsonl"
RECIPE = "recipe.yaml"


# What a finished run writes at the top of DIR; a fresh run in the same DIR clears these first so
# a --no-merge run never leaves an older merged model beside its adapter.
_OUTPUTS = ("config.json", "generation_config.json", "adapter_config.json", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt", "README.md", METRICS, LOG,
            RECIPE, "training_args.bin")


def prepare_out(out: Path, resume: bool, log) -> str | None:
    """Make DIR ready; return the checkpoint to resume from (None: start fresh)."""
    from transformers.trainer_utils import get_last_checkpoint

    ckpt_dir = out / CHECKPOINTS
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    finished = (out / METRICS).exists()
    if resume:
        if last is None:
            log(f"--resume: no checkpoint in {ckpt_dir}, starting fresh")
        out.mkdir(parents=True, exist_ok=True)
        return last
    if out.exists() and any(out.iterdir()):
        if last is not None and not finished:
            raise UsageError(f"{out} holds checkpoints of an unfinished run: pass --resume to continue it, "
                             "or choose another --out")
        if not finished:
            raise UsageError(f"{out} is not empty and holds no earlier `cai train` run; choose another --out")
        for name in _OUTPUTS:
            (out / name).unlink(missing_ok=True)
        for f in out.glob("*.safetensors*"):
            f.unlink()
        for sub in (CHECKPOINTS, ADAPTER):
            shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    return None



def _first_last(history: list[dict], key: str) -> tuple[float, float] | None:
    """Mean of the first and of the last quarter of the logged values (one value each for up to 7).

    A logged loss is one small batch's: on a few dozen examples the first and the last step alone
    swing by more than the whole run moves, and read as "training made it worse" half the time.
    """
    vals = [h[key] for h in history if key in h and isinstance(h[key], (int, float))]
    if not vals:
        return None
    k = max(1, len(vals) // 4)
    return sum(vals[:k]) / k, sum(vals[-k:]) / k


def summarize(stage: str, trainer, extra: dict) -> dict:
    history = trainer.state.log_history
    m: dict[str, Any] = {"stage": stage, "steps": trainer.state.global_step}
    final = next((h for h in reversed(history) if "train_runtime" in h), {})
    m["train_runtime_s"] = round(final.get("train_runtime", 0.0), 2)
    for key, name in (("loss", "loss"), ("rewards/margins", "reward_margin"), ("rewards/accuracies", "reward_accuracy"),
                      ("accuracy", "pair_accuracy"), ("reward", "reward"), ("kl", "kl")):
        fl = _first_last(history, key)
        if fl:
            m[f"first_{name}"], m[f"last_{name}"] = fl
    m.update(extra)
    return m


def summary_lines(m: dict) -> list[str]:
    lines = [f"stage: {m['stage']}", f"steps: {m['steps']} ({m.get('train_runtime_s', 0)} s)"]
    for name, label in (("loss", "loss"), ("reward_margin", "reward margin"), ("reward", "reward (mean)")):
        if f"first_{name}" in m:
            lines.append(f"{label}: {m[f'first_{name}']:.4f} → {m[f'last_{name}']:.4f}")
    if "heldout_accuracy" in m:
        lines.append(f"held-out pairwise accuracy: {m['heldout_accuracy']:.3f} on {m['heldout_pairs']} pairs")
    sources = (m.get("data") or {}).get("sources") or []
    if len(sources) > 1:
        lines.append("data: " + ", ".join(f"{s['name']} {s['taken']} ({s['share']:.1%})" for s in sources))
    lines += _reward_judge_lines(m)
    if "resumed_from" in m:
        lines.append(f"resumed from: {m['resumed_from']}")
    if m.get("rows_over_max_length"):
        lines.append(f"rows over max_length: {m['rows_over_max_length']} of {m.get('train_rows', '?')} (truncated by TRL)")
    lines.append(f"output: {m['output']} ({m['saved']})")
    return lines


def _reward_judge_lines(m: dict) -> list[str]:
    """rl --reward judge: the judge's calibration and the reward's map, repeated after a long run so
    a judge below the floor is not only said in lines that scrolled away before training."""
    from cai.judge.calibration import floor_figure
    from cai.judge.figures import fmt

    cal, rmap = m.get("judge_calibration"), m.get("reward_calibration")
    out = []
    if cal and cal.get("skipped"):
        out.append("reward judge: not calibrated (--calibration none; signal: not measured)")
    elif cal:
        figure, name = floor_figure(cal)
        out.append(f"reward judge: {name} {fmt(figure)} on {cal.get('n')} labelled pairs, floor "
                   f"{fmt(cal.get('min_agreement'))}" + (": BELOW THE FLOOR, its rewards are close to chance"
                                                         if cal.get("below_floor") else ""))
    if rmap:
        out.append("reward: " + (f"calibrated, temperature {fmt(rmap.get('temperature'))} (log-odds weight "
                                 f"{fmt(rmap.get('scale'))})" if rmap.get("method") == "temperature"
                                 else f"the judge's raw probability ({rmap.get('reason')})"))
    return out


def write_logs(out: Path, trainer, metrics: dict, recipe: Recipe) -> None:
    with open(out / LOG, "w", encoding="utf-8") as fh:
        for row in trainer.state.log_history:
            fh.write(json.dumps(row) + "\n")
    (out / METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
    (out / RECIPE).write_text(yaml.safe_dump(recipe.as_dict(), sort_keys=False))


