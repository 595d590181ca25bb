"""The model card (DIR/README.md): what was trained, from which data and constitution, how, and the figures."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from cai.judge.figures import fmt
from cai.train.data import DataInfo
from cai.train.settings import Recipe

def write_card(out: Path, *, stage: str, model: str, model_dir: Path, data: DataInfo, recipe: Recipe,
               metrics: dict, trainer_name: str, rows: list[tuple[str, str]] = ()) -> Path:
    """`rows` are the stage's own lines of the table (its loss, its reward source, a held-out figure)."""
    from cai.records import code_version

    cai = recipe.cai
    if cai.lora:
        method = (f"LoRA r={cai.lora_r}, alpha={cai.lora_alpha}, dropout={cai.lora_dropout}, "
                  f"targets {cai.lora_targets}; " + ("merged into the base (adapter in `adapter/`)"
                                                     if cai.merge else "adapter only (not merged)"))
    else:
        method = "full fine-tune"
    constitution = (f"{data.constitution_name or '?'} (sha256 `{data.constitution_sha256}`)"
                    if data.constitution_sha256 else
                    "not recorded (neither a run folder nor data with `constitution_sha256` columns)")
    used = f"{metrics.get('train_rows', data.rows)} used for training"
    if "heldout_pairs" in metrics:
        used += f", {metrics['heldout_pairs']} held out"
    lines = [
        "---",
        f"base_model: {json.dumps(str(model_dir))}",
        "library_name: " + ("peft" if cai.lora and not cai.merge else "transformers"),
        f"tags: [cai, constitutional-ai, trl, {stage}]",
        "---",
        "",
        f"# cai train {stage}",
        "",
        f"Trained by `cai train {stage}` with TRL's {trainer_name}.",
        "",
        "| | |",
        "|---|---|",
        f"| stage | {stage} |",
        f"| base model | `{model}` (`{model_dir}`) |",
        f"| data | `{data.path}` ({data.kind}, {data.rows} rows: {used}) |",
        f"| data sha256 | `{data.sha256}` |",
        f"| constitution | {constitution} |",
        f"| left out of the data | {('; '.join(data.left_out) or 'nothing') if data.kind == 'run folder' else 'as exported (see the dataset card beside the data)'} |",
        f"| method | {method} |",
        f"| weights saved | {metrics.get('saved', '?')}, {cai.save_dtype} |",
    ]
    lines += [f"| {label} | {value} |" for label, value in rows]
    cal = data.judge_calibration
    if cal:
        below = " (**below the floor**: the labels are close to chance)" if cal.get("below_floor") else ""
        figures = [f"agreement {fmt(cal.get('agreement'))}"] + [
            f"{label} {fmt(cal[key])}" for key, label in (("position_consistency", "position consistency"),
                                                           ("longer_wins", "longer wins")) if key in cal]
        n = f", n={cal['n']}" if "n" in cal else ""
        lines.append(f"| judge calibration | {', '.join(figures)}{n} on {cal.get('source', '?')}{below} |")
    lines += [
        f"| code version | {code_version()} |",
        "",
        "## Final metrics",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
              for k, v in metrics.items() if k not in ("output", "saved")]
    lines += ["", "## Recipe", "", f"Merged from: {' < '.join(recipe.sources)}.", "", "```yaml",
              yaml.safe_dump(recipe.as_dict(), sort_keys=False).rstrip(), "```", ""]
    card = out / "README.md"
    card.write_text("\n".join(lines))
    return card


