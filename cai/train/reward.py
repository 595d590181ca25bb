"""Reward model: TRL's RewardTrainer (a one-label sequence classifier) on preference rows.

A share of the pairs (`cai.eval_fraction`, at least one) is held out; the figure reported is the
held-out pairwise accuracy, the share of pairs where score(chosen) > score(rejected).
"""

from __future__ import annotations

from cai.train.common import Job, holdout_split, model_arg, preference_rows

DATA = "dpo"
TRAINER = "RewardTrainer"
AUTO = "AutoModelForSequenceClassification"
TASK = "SEQ_CLS"
LOAD_KWARGS: dict = {"num_labels": 1}


def rows(raw: list[dict], where: str) -> list[dict]:
    return preference_rows(raw, where)


def build(job: Job):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardTrainer

    train, held = holdout_split(job.rows, job.cai.eval_fraction, job.args.seed)
    job.log(f"reward: {len(train)} pairs for training, {len(held)} held out")
    model = model_arg(job.model_dir, AutoModelForSequenceClassification, job.args, **LOAD_KWARGS)
    if not isinstance(model, str):
        model.config.pad_token_id = job.tokenizer.pad_token_id
    return RewardTrainer(
        model=model,
        args=job.args,
        train_dataset=Dataset.from_list(train),
        eval_dataset=Dataset.from_list(held),
        processing_class=job.tokenizer,
        peft_config=job.peft_config(TASK),
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
