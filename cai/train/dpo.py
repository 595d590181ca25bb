"""DPO and its loss family: TRL's DPOTrainer on preference rows `{"prompt", "chosen", "rejected"}`.

The reference is the starting model: with LoRA TRL gets it by switching the adapter off, so no
second copy is held; `--ref-model` names another folder. `--loss` (recipe `loss_type`) picks any
loss the installed TRL's DPOConfig documents: `sigmoid` is DPO itself, `ipo` the IPO paper's
squared loss, `sigmoid_norm` DPO on length-normalised log-probabilities (docs/training.md says
when each helps).
"""

from __future__ import annotations

import re
from functools import cache

import click
from pydantic import Field

from cai.errors import UsageError
from cai.models import is_adapter_only
from cai.train.data import preference_rows, train_dataset
from cai.train.settings import MixSettings, Recipe, SoftLabelSettings
from cai.train.stage import Job, Stage
from cai.train.weights import load_full, model_arg


class DpoSettings(MixSettings):
    ref_model: str | None = Field(None, description="dpo, kto: reference model (default: the starting model).")


class DpoStageSettings(DpoSettings, SoftLabelSettings):
    """dpo's settings: kto's (the reference model, mixing) and the judge's probabilities as labels."""


@cache
def documented_losses(config: str = "DPOConfig") -> tuple[str, ...]:
    """The loss names the installed TRL documents for `config.loss_type`, in its order.

    Read from the field's own metadata (its choices, else the names its help text lists): TRL validates names only once training starts, and its
    list changes between releases, so the installed one is the authority.
    """
    import dataclasses

    import trl

    cls = getattr(trl, config)
    meta = next(f.metadata for f in dataclasses.fields(cls) if f.name == "loss_type")
    if meta.get("choices"):  # KTOConfig lists them as argparse choices
        return tuple(meta["choices"])
    help_text = meta.get("help", "")
    names = re.findall(r"`'?\"?([a-z][a-z0-9_]*)'?\"?`", help_text.split("If multiple")[0])
    return tuple(dict.fromkeys(n for n in names if n != "loss_type"))


def loss_names(value) -> list[str]:
    """A recipe's loss_type (one name, or a list TRL mixes with loss_weights) as a list."""
    return [value] if isinstance(value, str) else list(value or [])


def check_losses(recipe: Recipe, config: str) -> None:
    valid = documented_losses(config)
    bad = [n for n in loss_names(recipe.trl.get("loss_type")) if n not in valid]
    if bad:
        raise UsageError(f"unknown loss {', '.join(map(repr, bad))}: the installed TRL's {config} takes "
                         f"{', '.join(valid)}")


def losses_used(recipe: Recipe, default: str) -> str:
    return "+".join(loss_names(recipe.trl.get("loss_type"))) or default


def ref_model(job: Job, auto_cls):
    """The reference model to hand TRL, or None for its own (the base, or the adapter switched off)."""
    from cai.models import resolve

    # A full fine-tune from an adapter-only folder needs its merged self as reference: TRL would
    # otherwise reload the adapter's bare base.
    ref_dir = resolve(job.cai.ref_model, merge_adapters=False) if job.cai.ref_model else (
        job.model_dir if not job.cai.lora and is_adapter_only(job.model_dir) else None)
    return load_full(ref_dir, auto_cls, dtype=job.dtype()) if ref_dir is not None else None


def reference_once_if_cheaper(job: Job) -> None:
    """Keep `precompute_ref_log_probs` only where it saves work.

    Computing the reference log-probabilities once per row before training drops the reference
    forward from every step, but it scores every row, while a run capped by `max_steps` below one
    epoch scores only the rows it trains on: there, once per step is the cheaper of the two.
    """
    args = job.args
    if not getattr(args, "precompute_ref_log_probs", False):
        job.extra["reference_log_probs"] = "every step"
        return
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    if 0 < args.max_steps and args.max_steps * per_step < len(job.rows):
        args.precompute_ref_log_probs = False
        job.log(f"reference log-probabilities: every step, not precomputed: {args.max_steps} steps train "
                f"{args.max_steps * per_step} of the {len(job.rows)} rows")
    job.extra["reference_log_probs"] = "precomputed once" if args.precompute_ref_log_probs else "every step"


def with_reference(trainer_cls, job: Job):
    """A TRL preference trainer (DPO, KTO) on the job's rows, with its reference model."""
    from transformers import AutoModelForCausalLM

    reference_once_if_cheaper(job)
    return trainer_cls(
        model=model_arg(job.model_dir, AutoModelForCausalLM, job.args),
        ref_model=ref_model(job, AutoModelForCausalLM),
        args=job.args,
        train_dataset=train_dataset(job.rows),
        processing_class=job.tokenizer,
        peft_config=job.peft_config("CAUSAL_LM"),
    )


def check(recipe: Recipe) -> None:
    check_losses(recipe, "DPOConfig")
    if getattr(recipe.cai, "soft_labels", False):
        from cai.train.soft import LOSSES

        bad = [n for n in loss_names(recipe.trl.get("loss_type")) if n not in LOSSES]
        if bad:
            raise UsageError(f"--soft-labels with --loss {'+'.join(bad)}: soft labels (p_chosen as the target "
                             f"probability) are defined for loss {', '.join(LOSSES)} only")
        if recipe.trl.get("f_divergence_type", "reverse_kl") != "reverse_kl":
            raise UsageError(f"--soft-labels with f_divergence_type {recipe.trl['f_divergence_type']}: soft labels "
                             "are defined for reverse_kl (standard DPO) only")


def labels_used(job: Job) -> None:
    """Leave out the pairs under `min_confidence` and record which labels train (metrics.json, card)."""
    from cai.train.soft import labelled_rows

    job.rows = labelled_rows(job)


def build(job: Job):
    from trl import DPOTrainer

    job.extra["loss_type"] = losses_used(job.recipe, "sigmoid")
    labels_used(job)
    if job.cai.soft_labels:
        from cai.train.soft import dpo_trainer_class

        return with_reference(dpo_trainer_class(), job)
    return with_reference(DPOTrainer, job)


def preference_rows_with_p(rows: list[dict], where: str, start: int = 0) -> list[dict]:
    """Preference rows, each with the judge's `p_chosen` (NaN where the data has none)."""
    from cai.train.soft import with_p

    return with_p(preference_rows(rows, where, start), rows)


def card_rows(settings: DpoSettings, metrics: dict) -> list[tuple[str, str]]:
    from cai.train.soft import card_rows as label_rows

    return [("loss", f"{metrics.get('loss_type', 'sigmoid')} (TRL DPOConfig.loss_type)"),
            ("reference model", settings.ref_model or "the starting model"), *label_rows(metrics)]


# Flags of the stages that may train on the judge's probabilities (dpo, reward; cai/train/soft.py).
SOFT_OPTIONS = (
    click.option("--soft-labels", "soft_labels", is_flag=True, default=None,
                 help="Each pair's p_chosen is the target probability that chosen beats rejected (binary "
                      "cross-entropy against p); pairs without it train as hard labels [default: hard labels]."),
    click.option("--min-confidence", "min_confidence", type=click.FloatRange(0, 0.5), default=None, metavar="X",
                 help="Keep only pairs with |p_chosen - 0.5| >= X (pairs without p_chosen are kept)."),
)


STAGE = Stage(
    name="dpo",
    help='DPO (or a loss of its family, --loss) on {"prompt", "chosen", "rejected"} preference rows '
         '(a run folder gives its judged pairs).',
    data="dpo",
    data_help='`{"prompt", "chosen", "rejected"}` message lists (a run folder: its judged pairs)',
    trainer="DPOTrainer",
    rows=preference_rows_with_p,
    build=build,
    settings=DpoStageSettings,
    options=(
        click.option("--ref-model", default=None, help="Reference model [default: the starting model]."),
        click.option("--beta", type=float, default=None, help="DPO beta: the pull towards the reference."),
        click.option("--loss", "loss_type", default=None, metavar="NAME",
                     help="A loss type of TRL's DPOConfig: sigmoid (DPO) [default], ipo, sigmoid_norm, hinge, "
                          "robust, ... (a wrong name lists them all)."),
        *SOFT_OPTIONS,
    ),
    card_rows=card_rows,
    check=check,
    columns=(("prompt", "chosen", "rejected"),),
    convert=preference_rows_with_p,
)
