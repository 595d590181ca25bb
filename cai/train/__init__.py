"""Training stages over TRL: `run_stage("sft" | "dpo" | "reward" | "rl", ...)`.

Each stage module (`sft.py`, `dpo.py`, `reward.py`, `rl.py`) turns the rows and the recipe into a
TRL trainer; this module runs it and writes the output folder (see `common.py`). torch and TRL are
imported only when a stage runs, so `cai --help` stays fast.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from cai.errors import UsageError
from cai.train.common import STAGES, Job, load_recipe, summary_lines

__all__ = ["STAGES", "load_recipe", "run_stage", "summary_lines"]


def run_stage(stage: str, data: str | Path, model: str, out: str | Path, overrides: dict | None = None,
              config: str | Path | None = None, *, resume: bool = False, device: str | None = None,
              log=print) -> dict:
    """Train one stage and write DIR; returns the final metrics (also in DIR/metrics.json).

    `overrides` holds TRL config fields and `cai:` settings by name (flat), applied over the
    bundled recipe for `device` ("cpu"/"gpu", default: gpu where CUDA is available) and `config`.
    """
    from cai.models import resolve
    from cai.train import common

    recipe = load_recipe(stage, config, overrides, device=device)
    mod = importlib.import_module(f"cai.train.{stage}")
    model_dir = resolve(model, merge_adapters=False)
    raw, info = common.read_data(data, mod.DATA, fallback=getattr(mod, "FALLBACK", None),
                                 keep_flagged=recipe.cai.keep_flagged, filter=recipe.cai.filter)
    for line in info.left_out:
        log(f"data: {line}")
    rows = mod.rows(raw, f"--data {data}")
    if not rows:
        raise UsageError(f"--data {data}: no rows to train on")
    out = Path(out)
    import transformers

    args = recipe.trl_args(out / common.CHECKPOINTS)
    # Under `accelerate launch` every rank runs this; only the first may clear or check DIR.
    with args.main_process_first(local=False, desc="preparing the output folder"):
        checkpoint = common.prepare_out(out, resume, log)
    transformers.set_seed(args.seed)  # before the trainer: TRL initialises new heads (reward score) in __init__
    tokenizer = common.load_tokenizer(model_dir)
    limit = getattr(args, "max_length", None)
    over = common.rows_over(rows, tokenizer, limit)
    if over:
        log(f"data: {over} of {len(rows)} rows are longer than max_length {limit} tokens; TRL truncates them")
    job = Job(stage=stage, recipe=recipe, args=args, model=model, model_dir=model_dir, tokenizer=tokenizer,
              rows=rows, data=info, out=out, log=log)
    trainer = mod.build(job)
    if checkpoint:
        log(f"resuming from {checkpoint}")
    trainer.train(resume_from_checkpoint=checkpoint)

    extra = {"train_rows": len(rows), "rows_over_max_length": over, **job.extra}
    if hasattr(mod, "evaluate"):
        extra.update(mod.evaluate(trainer, job))
    auto_cls = getattr(transformers, mod.AUTO)
    saved = common.save_model(trainer, out, model_dir, recipe, auto_cls, tokenizer, **mod.LOAD_KWARGS)
    metrics = common.summarize(stage, trainer, extra)
    metrics.update({"output": str(out), "saved": saved})
    if checkpoint:
        metrics["resumed_from"] = Path(checkpoint).name
    if trainer.accelerator.is_main_process:
        name = mod.trainer_name(recipe.cai.algorithm) if stage == "rl" else mod.TRAINER
        common.write_logs(out, trainer, metrics, recipe)
        common.write_card(out, stage=stage, model=model, model_dir=model_dir, data=info, recipe=recipe,
                          metrics=metrics, trainer_name=name)
    return metrics
