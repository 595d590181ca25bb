"""Reward model: TRL's RewardTrainer (a one-label sequence classifier) on preference rows.

A share of the pairs (`cai.eval_fraction`, at least one) is held out; the figure reported is the
held-out pairwise accuracy, the share of pairs where score(chosen) > score(rejected).
"""

from __future__ import annotations

import click
from pydantic import Field

from cai.train.data import holdout_split
from cai.train.dpo import SOFT_OPTIONS, preference_rows_with_p
from cai.train.settings import SoftLabelSettings
from cai.train.stage import Job, Stage
from cai.train.weights import model_arg


class RewardSettings(SoftLabelSettings):
    eval_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="reward: share of pairs held out (>= 1 pair).")


def build(job: Job):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardTrainer

    from cai.train.soft import labelled_rows, reward_trainer_class

    job.rows = labelled_rows(job)
    trainer_cls = reward_trainer_class() if job.cai.soft_labels else RewardTrainer
    train, held = holdout_split(job.rows, job.cai.eval_fraction, job.args.seed)
    job.log(f"reward: {len(train)} pairs for training, {len(held)} held out")
    model = model_arg(job.model_dir, AutoModelForSequenceClassification, job.args, **STAGE.load_kwargs)
    if not isinstance(model, str):
        model.config.pad_token_id = job.tokenizer.pad_token_id
    return trainer_cls(
        model=model,
        args=job.args,
        train_dataset=Dataset.from_list(train),
        eval_dataset=Dataset.from_list(held),
        processing_class=job.tokenizer,
        peft_config=job.peft_config(STAGE.task),
    )


def evaluate(trainer, job: Job, batch_size: int = 8) -> dict:
    """Held-out pairwise accuracy on the pairs as the trainer tokenized them (pairs longer than
    max_length were dropped by TRL, so the count can be below the split)."""
    import torch

    model, pad = trainer.model, job.tokenizer.pad_token_id
    model.eval()
    ds = trainer.eval_dataset

    def scores(seqs: list[list[int]]) -> torch.Tensor:
        width = max(len(s) for s in seqs)
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=model.device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=model.device)
        return model(input_ids=ids, attention_mask=mask).logits[:, 0].float().cpu()

    wins, n = 0, len(ds)
    with torch.no_grad():
        for i in range(0, n, batch_size):
            part = ds[i:i + batch_size]
            wins += int((scores(part["chosen_ids"]) > scores(part["rejected_ids"])).sum())
    return {"train_rows": len(trainer.train_dataset), "heldout_pairs": n,
            "heldout_accuracy": wins / n if n else float("nan")}


def card_rows(settings: RewardSettings, metrics: dict) -> list[tuple[str, str]]:
    from cai.train.soft import card_rows as label_rows

    if "heldout_accuracy" not in metrics:
        return label_rows(metrics)
    return [*label_rows(metrics), ("held-out pairwise accuracy", f"{metrics['heldout_accuracy']:.3f} on {metrics['heldout_pairs']} pairs "
             "(share where score(chosen) > score(rejected))")]


STAGE = Stage(
    name="reward",
    help="A reward model (one-score sequence classifier) on preference rows; reports held-out accuracy.",
    data="dpo",
    data_help='`{"prompt", "chosen", "rejected"}` message lists',
    trainer="RewardTrainer",
    rows=preference_rows_with_p,
    build=build,
    settings=RewardSettings,
    model_class="AutoModelForSequenceClassification",
    task="SEQ_CLS",
    load_kwargs={"num_labels": 1},
    evaluate=evaluate,
    options=(click.option("--eval-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
                          help="Share of pairs held out for the pairwise accuracy [default: 0.2 on CPU]."),
             *SOFT_OPTIONS),
    card_rows=card_rows,
)
