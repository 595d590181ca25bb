"""DPO: TRL's DPOTrainer on preference rows `{"prompt", "chosen", "rejected"}` (message lists).

The reference is the starting model: with LoRA TRL gets it by switching the adapter off, so no
second copy is held; `--ref-model` names another folder.
"""

from __future__ import annotations

from cai.train.common import Job, is_adapter_only, load_full, model_arg, preference_rows

DATA = "dpo"
TRAINER = "DPOTrainer"
AUTO = "AutoModelForCausalLM"
TASK = "CAUSAL_LM"
LOAD_KWARGS: dict = {}


def rows(raw: list[dict], where: str) -> list[dict]:
    return preference_rows(raw, where)


def build(job: Job):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOTrainer

    from cai.models import resolve

    ref = None
    # A full fine-tune from an adapter-only folder needs its merged self as reference: TRL would
    # otherwise reload the adapter's bare base.
    ref_dir = resolve(job.cai.ref_model, merge_adapters=False) if job.cai.ref_model else (
        job.model_dir if not job.cai.lora and is_adapter_only(job.model_dir) else None)
    if ref_dir is not None:
        ref = load_full(ref_dir, AutoModelForCausalLM, dtype=job.dtype())
    return DPOTrainer(
        model=model_arg(job.model_dir, AutoModelForCausalLM, job.args),
        ref_model=ref,
        args=job.args,
        train_dataset=Dataset.from_list(job.rows),
        processing_class=job.tokenizer,
        peft_config=job.peft_config(TASK),
    )
