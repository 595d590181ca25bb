"""Training stages over TRL: `run_stage(name, ...)` for every stage in `registry.STAGES`.

Each stage module (`sft`, `dpo`, `kto`, `reward`, `rl`) declares one `Stage` (`stage.py`): the rows
it reads, its TRL trainer, its `cai:` settings and flags. The rest is shared, one concept per
module: `recipe` (bundled < --config < flags), `data` (files, datasets folders, run folders),
`weights` (LoRA, adapter-only folders, merging), `output` (the folder, logs, metrics), `memory`
(process-wide allocator and tile settings) and `card`.
torch and TRL are imported only when a stage runs, so `cai --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path

from cai.errors import UsageError
from cai.train.output import summary_lines
from cai.train.recipe import load_recipe

__all__ = ["load_recipe", "run_stage", "summary_lines"]


def run_stage(stage: str, data, model: str, out: str | Path, overrides: dict | None = None,
              config: str | Path | None = None, *, resume: bool = False, device: str | None = None,
              log=print) -> dict:
    """Train one stage and write DIR; returns the final metrics (also in DIR/metrics.json).

    `data`: a path, a `PATH:WEIGHT` string or a list of them (a mix, cai/train/mix.py), or None for
    the recipe's `datasets:` list.

    `overrides` holds TRL config fields and `cai:` settings by name (flat), applied over the
    bundled recipe for `device` ("cpu"/"gpu", default: gpu where CUDA is available) and `config`.
    """
    from cai.models import resolve
    from cai.train import card, memory, output
    from cai.train.data import rows_over
    from cai.train.mix import training_data
    from cai.train.registry import get_stage
    from cai.train.stage import Job
    from cai.train.weights import load_tokenizer, save_model

    spec = get_stage(stage)
    recipe = load_recipe(stage, config, overrides, device=device)
    memory.apply(recipe.cai, log)  # before anything large is allocated
    # The data before the model: a source of the wrong kind is exit 2 before anything loads.
    rows, info = training_data(spec, data, recipe, log)
    for line in info.left_out:
        log(f"data: {line}")
    if not rows:
        raise UsageError(f"--data {info.path}: no rows to train on")
    model_dir = resolve(model, merge_adapters=False)
    out = Path(out)
    import transformers

    args = recipe.trl_args(out / output.CHECKPOINTS)
    # Under `accelerate launch` every rank runs this; only the first may clear or check DIR.
    with args.main_process_first(local=False, desc="preparing the output folder"):
        checkpoint = output.prepare_out(out, resume, log)
    transformers.set_seed(args.seed)  # before the trainer: TRL initialises new heads (reward score) in __init__
    tokenizer = load_tokenizer(model_dir)
    limit = getattr(args, "max_length", None)
    over = rows_over(rows, tokenizer, limit)
    if over:
        log(f"data: {over} of {len(rows)} rows are longer than max_length {limit} tokens; TRL truncates them")
    job = Job(stage=stage, recipe=recipe, args=args, model=model, model_dir=model_dir, tokenizer=tokenizer,
              rows=rows, data=info, out=out, log=log)
    trainer = spec.build(job)
    if checkpoint:
        log(f"resuming from {checkpoint}")
    trainer.train(resume_from_checkpoint=checkpoint)

    extra = {"train_rows": len(rows), "rows_over_max_length": over, **job.extra, "data": info.record()}
    if spec.evaluate:
        extra.update(spec.evaluate(trainer, job))
    auto_cls = getattr(transformers, spec.model_class)
    saved = save_model(trainer, out, model_dir, recipe, auto_cls, tokenizer, **spec.load_kwargs)
    metrics = output.summarize(stage, trainer, extra)
    metrics.update({"output": str(out), "saved": saved})
    if checkpoint:
        metrics["resumed_from"] = Path(checkpoint).name
    if trainer.accelerator.is_main_process:
        output.write_logs(out, trainer, metrics, recipe)
        card.write_card(out, stage=stage, model=model, model_dir=model_dir, data=info, recipe=recipe,
                        metrics=metrics, trainer_name=spec.trainer_name(recipe.cai),
                        rows=spec.card_rows(recipe.cai, metrics) if spec.card_rows else [])
    return metrics
