"""Soft labels: each judged pair's `p_chosen` as the target probability that chosen beats rejected.

The pairwise loss of DPO (`sigmoid`) and of the reward model is then binary cross-entropy against p
instead of against 1:

    loss = -p * logsigmoid(x) - (1 - p) * logsigmoid(-x)

with x = beta * (policy - reference log-ratio margin) for DPO (the "conservative DPO" form: a
per-pair label smoothing of 1 - p) and x = r_chosen - r_rejected for the reward model. At p = 1 it
is the standard loss; at p = 0.5 its gradient in x is zero, so a pair the judge could not decide
does not pull at all.

How `p_chosen` reaches the loss: the stage's rows carry it as a float column (NaN where the data had
none: trained as p = 1). TRL drops every column its trainer's signature does not name
(`remove_unused_columns`), so the trainers here add `p_chosen` to the signature columns, and their
collators put it in the batch as a tensor: it travels with each batch, so nothing is process-local
and `accelerate launch` splits it with the rows. The loss reads it from the batch and takes it out
before the model sees the batch.

TRL writes its losses inline (`-F.logsigmoid(beta * delta)` in DPOTrainer._compute_loss,
`-nn.functional.logsigmoid(r_c - r_r)` in RewardTrainer.compute_loss). Rather than copy those
functions, the trainers here run TRL's own for the batch with `logsigmoid` replaced, for that call
only, by the soft one of the batch's p; it must be called exactly once on a tensor of one value per
pair, else the installed TRL's loss has changed and training stops with an error saying so.
"""

from __future__ import annotations

import math
import types
from contextlib import contextmanager

COLUMN = "p_chosen"
LOSSES = ("sigmoid",)  # the DPO losses soft labels are defined for


def soft_sigmoid_loss(x, p):
    """Per-pair -p·logσ(x) - (1-p)·logσ(-x) (tensors of one value per pair)."""
    import torch.nn.functional as F

    return -(p * F.logsigmoid(x) + (1 - p) * F.logsigmoid(-x))


def p_value(value) -> float:
    """A row's p_chosen as a float; NaN where it has none."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def targets(values):
    """The batch's target probabilities: p_chosen, 1.0 (a hard label) where a row has none."""
    import torch

    p = torch.tensor([p_value(v) for v in values], dtype=torch.float32)
    return torch.where(torch.isnan(p), torch.ones_like(p), p)


def with_p(rows: list[dict], raw: list[dict]) -> list[dict]:
    """Converted rows, each with its raw row's p_chosen (NaN: none)."""
    for out, r in zip(rows, raw, strict=True):
        out[COLUMN] = p_value(r.get(COLUMN))
    return rows


def confident(p: float, min_confidence: float) -> bool:
    """cai export's --min-confidence rule: |p - 0.5| >= X; a row without p is kept."""
    return math.isnan(p) or abs(p - 0.5) >= min_confidence - 1e-9


class _KeepP:
    """A collator mixin: the batch also holds `p_chosen` (one float per pair, 1.0 where missing)."""

    def torch_call(self, examples):
        out = super().torch_call(examples)
        out[COLUMN] = targets([e.get(COLUMN) for e in examples])
        return out


@contextmanager
def soft_logsigmoid(module, name: str, p, *, nested: str | None = None):
    """Within the block, `module.<name>[.<nested>].logsigmoid` is the soft one of targets `p`.

    `name` is the global of TRL's module that holds the functional namespace (`F`, or `nn` with
    `nested="functional"`). Yields a list that counts the calls.
    """
    import torch.nn.functional as F

    calls = []

    def logsigmoid(x, *args, **kwargs):
        if x.dim() != 1 or x.shape[0] != p.shape[0]:
            raise RuntimeError(f"soft labels: the installed TRL's loss called logsigmoid on a tensor of shape "
                               f"{tuple(x.shape)}, not one value per pair ({p.shape[0]}): its loss changed, "
                               "cai/train/soft.py needs updating")
        calls.append(x.shape)
        q = p.to(device=x.device, dtype=x.dtype)
        return q * F.logsigmoid(x) + (1 - q) * F.logsigmoid(-x)

    original = getattr(module, name)
    if nested:
        inner = types.SimpleNamespace(**{k: getattr(F, k) for k in dir(F) if not k.startswith("__")})
        inner.logsigmoid = logsigmoid
        proxy = types.SimpleNamespace(**{k: getattr(original, k) for k in dir(original) if not k.startswith("__")})
        setattr(proxy, nested, inner)
    else:
        proxy = types.SimpleNamespace(**{k: getattr(F, k) for k in dir(F) if not k.startswith("__")})
        proxy.logsigmoid = logsigmoid
    setattr(module, name, proxy)
    try:
        yield calls
    finally:
        setattr(module, name, original)
    if len(calls) != 1:
        raise RuntimeError(f"soft labels: the installed TRL's loss called logsigmoid {len(calls)} times, not once: "
                           "its loss changed, cai/train/soft.py needs updating")


def dpo_trainer_class():
    """DPOTrainer whose sigmoid loss takes each pair's p_chosen as its target."""
    from trl.trainer import dpo_trainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference, DPOTrainer

    class SoftPreferenceCollator(_KeepP, DataCollatorForPreference):
        pass

    class SoftDPOTrainer(DPOTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            c = self.data_collator
            if isinstance(c, DataCollatorForPreference) and not isinstance(c, _KeepP):
                self.data_collator = SoftPreferenceCollator(
                    pad_token_id=c.pad_token_id, max_length=c.max_length, truncation_mode=c.truncation_mode,
                    pad_to_multiple_of=c.pad_to_multiple_of, return_tensors=c.return_tensors)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if COLUMN not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, COLUMN]

        def compute_ref_log_probs(self, model, inputs):
            return super().compute_ref_log_probs(model, {k: v for k, v in inputs.items() if k != COLUMN})

        def _compute_loss(self, model, inputs, return_outputs):
            if set(self.loss_types) - set(LOSSES) or self.f_divergence_type != "reverse_kl":
                raise RuntimeError(f"soft labels are defined for loss {', '.join(LOSSES)} with reverse_kl, "
                                   f"not {self.loss_types} with {self.f_divergence_type}")
            inputs = dict(inputs)
            p = inputs.pop(COLUMN, None)
            if p is None:
                p = inputs["input_ids"].new_ones(inputs["input_ids"].shape[0] // 2, dtype=float)
            with soft_logsigmoid(dpo_trainer, "F", p):
                return super()._compute_loss(model, inputs, return_outputs)

    return SoftDPOTrainer


def reward_trainer_class():
    """RewardTrainer whose pairwise loss is binary cross-entropy against each pair's p_chosen."""
    from trl.trainer import reward_trainer
    from trl.trainer.reward_trainer import DataCollatorForPreference, RewardTrainer

    class SoftRewardCollator(_KeepP, DataCollatorForPreference):
        pass

    class SoftRewardTrainer(RewardTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            c = self.data_collator
            if isinstance(c, DataCollatorForPreference) and not isinstance(c, _KeepP):
                self.data_collator = SoftRewardCollator(pad_token_id=c.pad_token_id,
                                                        pad_to_multiple_of=c.pad_to_multiple_of,
                                                        return_tensors=c.return_tensors)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if COLUMN not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, COLUMN]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = dict(inputs)
            p = inputs.pop(COLUMN, None)
            if p is None:
                p = inputs["input_ids"].new_ones(inputs["input_ids"].shape[0] // 2, dtype=float)
            if "margin" in inputs:
                raise RuntimeError("soft labels: rows with a `margin` column are not supported")
            with soft_logsigmoid(reward_trainer, "nn", p, nested="functional"):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    return SoftRewardTrainer


def labelled_rows(job):
    """The job's rows less the pairs under `min_confidence`; records the labels used in `job.extra`.

    Rows are a list of dicts (reward) or a `datasets.Dataset` (dpo, mixed). The filter is applied to
    the `p_chosen` column, so it holds for a run folder and for an exported file alike.
    """
    from datasets import Dataset

    from cai.errors import UsageError

    rows, cai = job.rows, job.cai
    ps = [p_value(v) for v in (rows[COLUMN] if isinstance(rows, Dataset) else [r.get(COLUMN) for r in rows])] \
        if (isinstance(rows, Dataset) and COLUMN in rows.column_names) or isinstance(rows, list) else []
    with_p_n = sum(not math.isnan(p) for p in ps)
    if cai.min_confidence is not None:
        keep = [i for i, p in enumerate(ps) if confident(p, cai.min_confidence)]
        left = len(ps) - len(keep)
        if left:
            rows = rows.select(keep) if isinstance(rows, Dataset) else [rows[i] for i in keep]
            with_p_n = sum(not math.isnan(ps[i]) for i in keep)
        job.log(f"data: {left} pairs left out: the judge's confidence |p_chosen - 0.5| was under "
                f"--min-confidence {cai.min_confidence}")
        if not len(rows):
            raise UsageError(f"--min-confidence {cai.min_confidence}: no pair left to train on")
        job.extra["min_confidence"] = cai.min_confidence
        job.extra["unconfident_left_out"] = left
        job.extra["train_rows"] = len(rows)
    n = len(rows)
    if cai.soft_labels:
        job.extra["labels"] = "soft (p_chosen)"
        job.extra["soft_label_rows"] = with_p_n
        if with_p_n < n:
            job.log(f"soft labels: {n - with_p_n} of {n} pairs have no p_chosen and train as hard labels (p = 1)")
    else:
        job.extra["labels"] = "hard"
    return rows


def card_rows(metrics: dict) -> list[tuple[str, str]]:
    """The card's lines on the labels used and the pairs min_confidence left out."""
    out = []
    if "labels" in metrics:
        text = metrics["labels"]
        if text.startswith("soft"):
            n, total = metrics.get("soft_label_rows"), metrics.get("train_rows")
            text += f": the judge's probability as each pair's target; {n} of {total} pairs carry one, " \
                    "the rest train as hard labels (p = 1)" if n is not None else ""
        else:
            text += " (chosen beats rejected with probability 1)"
        out.append(("labels", text))
    if "min_confidence" in metrics:
        out.append(("min confidence", f"{metrics['unconfident_left_out']} pairs with abs(p_chosen - 0.5) < "
                    f"{metrics['min_confidence']} left out"))
    return out
