"""SFT: TRL's SFTTrainer on `{"messages": [...]}` rows (the prompt and the revised answer).

Each conversation is handed to TRL as prompt (everything before the last assistant turn) and
completion (that turn), so by default the loss falls on the answer only: the model should learn
the revised answers, not to write red-team prompts. `completion_only_loss: false` in a recipe
trains on the whole conversation.
"""

from __future__ import annotations

from cai.train.common import Job, model_arg, sft_rows

DATA = "sft"
TRAINER = "SFTTrainer"
AUTO = "AutoModelForCausalLM"
TASK = "CAUSAL_LM"
LOAD_KWARGS: dict = {}


def rows(raw: list[dict], where: str) -> list[dict]:
    convs = [r["messages"] for r in sft_rows(raw, where)]
    lasts = [max((k for k, m in enumerate(c) if m["role"] == "assistant"), default=0) for c in convs]
    if not all(lasts):  # a row with no answer to split off: language modelling on every conversation
        return [{"messages": c} for c in convs]
    return [{"prompt": c[:k], "completion": c[k:]} for c, k in zip(convs, lasts)]


def build(job: Job):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    return SFTTrainer(
        model=model_arg(job.model_dir, AutoModelForCausalLM, job.args),
        args=job.args,
        train_dataset=Dataset.from_list(job.rows),
        processing_class=job.tokenizer,
        peft_config=job.peft_config(TASK),
    )
