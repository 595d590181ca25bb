"""SFT: TRL's SFTTrainer on `{"messages": [...]}` rows (the prompt and the revised answer).

Each conversation is handed to TRL as prompt (everything before the last assistant turn) and
completion (that turn), so by default the loss falls on the answer only: the model should learn
the revised answers, not to write red-team prompts. `completion_only_loss: false` in a recipe
trains on the whole conversation.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from cai.train.data import sft_rows, train_dataset
from cai.train.settings import MixSettings
from cai.train.stage import Job, Stage
from cai.train.weights import model_arg


class SftSettings(MixSettings):
    filter: Literal["none", "judged"] = Field("none", description="sft from a judged run folder: `judged` keeps only "
                                              "rows whose final revision the judge preferred (rejection-sampled SFT).")


def _last_answer(conv: list[dict]) -> int:
    return max((k for k, m in enumerate(conv) if m["role"] == "assistant"), default=0)


def rows(raw: list[dict], where: str) -> list[dict]:
    convs = [r["messages"] for r in sft_rows(raw, where)]
    lasts = [_last_answer(c) for c in convs]
    if not all(lasts):  # a row with no answer to split off: language modelling on every conversation
        return [{"messages": c} for c in convs]
    return [{"prompt": c[:k], "completion": c[k:]} for c, k in zip(convs, lasts)]


def finish(ds):
    """`rows`' split for the mixed `{"messages", "source"}` Dataset: prompt and completion when every
    conversation has an answer after its first turn, else the conversations as they are. The split is
    decided over the whole mix, so every source's rows reach TRL in the same form."""
    from cai.train.data import fingerprint

    lasts = [_last_answer(c) for b in ds.select_columns(["messages"]).iter(batch_size=1000) for c in b["messages"]]
    if not all(lasts):
        return ds

    def split(batch, idx):
        convs = batch["messages"]
        return {"prompt": [c[:lasts[i]] for c, i in zip(convs, idx)],
                "completion": [c[lasts[i]:] for c, i in zip(convs, idx)]}

    return ds.map(split, batched=True, with_indices=True, remove_columns=["messages"],
                  new_fingerprint=fingerprint(ds, "sft-split"))


def build(job: Job):
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    return SFTTrainer(
        model=model_arg(job.model_dir, AutoModelForCausalLM, job.args),
        args=job.args,
        train_dataset=train_dataset(job.rows),
        processing_class=job.tokenizer,
        peft_config=job.peft_config(STAGE.task),
    )


STAGE = Stage(
    name="sft",
    help='Supervised fine-tuning on {"messages": [...]} rows (a run folder gives its revisions).',
    data="sft",
    data_help='`{"messages": [...]}` (a run folder: prompt + final revision)',
    trainer="SFTTrainer",
    rows=rows,
    build=build,
    settings=SftSettings,
    columns=(("messages",),),
    convert=sft_rows,
    finish=finish,
)
