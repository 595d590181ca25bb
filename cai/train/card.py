"""The model card (DIR/README.md): what was trained, from which data and constitution, how, and the figures."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from cai.judge.figures import fmt
from cai.train.data import DataInfo
from cai.train.settings import Recipe


def _left_out(data: DataInfo) -> str:
    exported = "as exported (see the dataset card beside the data)"
    if data.kind == "run folder":
        return "; ".join(data.left_out) or "nothing"
    if data.kind != "mix":
        return exported
    return "; ".join(f"`{s.name}`: " + (("; ".join(s.info.left_out) or "nothing") if s.kind == "run folder"
                                          else "as exported") for s in data.sources if s.info is not None)


def calibration_cell(cal: dict) -> str:
    """A judge calibration in one table cell: its figures and set, and whether it is below the floor."""
    if cal.get("skipped"):
        return "none (`--calibration none`): the judge was not measured (signal: not measured)"
    below = " (**below the floor**: the labels are close to chance)" if cal.get("below_floor") else ""
    figures = [f"agreement {fmt(cal.get('agreement'))}"]
    if cal.get("balanced_agreement") is not None:
        figures.append(f"mean over kinds {fmt(cal['balanced_agreement'])} (the floor's figure)")
    figures += [f"{name} {fmt(cal[key])}" for key, name in (("position_consistency", "position consistency"),
                                                            ("longer_wins", "longer wins")) if key in cal]
    n = f", n={cal['n']}" if "n" in cal else ""
    floor = f", floor {fmt(cal['min_agreement'])}" if "min_agreement" in cal else ""
    return f"{', '.join(figures)}{n} on {cal.get('source', '?')}{floor}{below}"


def sources_table(data: DataInfo) -> list[str]:
    """The card's `## Data sources`: each source, the file its sha256 is of, the rows it gave and its share."""
    if not data.sources:
        return []
    lines = ["## Data sources", "",
             "| source | kind | sha256 | rows taken | share |",
             "|---|---|---|---|---|"]
    for s in data.sources:
        kind = s.kind + (f", split `{s.split}`" if s.split else "")
        if s.kind == "run folder":
            kind += f" (`{Path(s.file).name}`)"
        elif s.file != s.path:
            kind += f" (`{s.file}`)"
        lines.append(f"| `{s.name}` | {kind} | `{s.sha256}` | {s.taken_text()} | {s.share:.1%} |")
    lines.append("")
    if data.seed is not None:
        repeats = " (past its size: every row once before any twice)" if any(s.repeated for s in data.sources) else ""
        text = (f"Each source sampled without replacement{repeats}, then mixed and shuffled, with seed {data.seed}; "
                f"the mix's size: {data.mix_rule}.")
        capped = ", ".join(f"`{s.name}`" for s in data.sources if s.capped)
        if capped:
            text += (f" **Capped**: {capped} held fewer rows than its share asked, and gave each once "
                     "(`--oversample` repeats rows instead).")
        lines.append(text)
    else:
        lines.append("Every row of the source, in its order.")
    lines += ["", "Each training row's `source` column names its source; the sha256 is the file's "
              "(for a run folder, of the file the stage reads from it).", ""]
    return lines


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
        f"| left out of the data | {_left_out(data)} |",
        f"| method | {method} |",
        f"| weights saved | {metrics.get('saved', '?')}, {cai.save_dtype} |",
    ]
    lines += [f"| {label} | {value} |" for label, value in rows]
    calibrations = ([("judge calibration", data.judge_calibration)] if data.kind != "mix" else
                    [(f"judge calibration (`{src.name}`)", src.info.judge_calibration)
                     for src in data.sources if src.info is not None])
    lines += [f"| {label} | {calibration_cell(cal)} |" for label, cal in calibrations if cal]
    lines += [f"| code version | {code_version()} |", ""]
    lines += sources_table(data)
    lines += [
        "## Final metrics",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
              # a dict (data, a calibration) has lines of its own above, or lives in metrics.json only
              for k, v in metrics.items() if k not in ("output", "saved") and not isinstance(v, dict)]
    lines += ["", "## Recipe", "", f"Merged from: {' < '.join(recipe.sources)}.", "", "```yaml",
              yaml.safe_dump(recipe.as_dict(), sort_keys=False).rstrip(), "```", ""]
    card = out / "README.md"
    card.write_text("\n".join(lines))
    return card


