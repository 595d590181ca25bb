"""Soft labels (cai/train/soft.py): p_chosen as each pair's target probability.

Fast: the loss on tensors (hard at p = 1, flat at p = 0.5 where policy = reference), the real
DPOTrainer/RewardTrainer subclasses on a tiny random Llama with the default model's tokenizer (the
collator keeps p_chosen, p = 1 gives TRL's own loss, p = 0.5 gives no gradient at the start),
--min-confidence, and --soft-labels --loss ipo refused. Slow: dpo and reward --soft-labels train 2
steps of the default model through the CLI.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from cai.cli import main
from cai.train.soft import soft_sigmoid_loss

QA = [("What is the capital of France?", "The capital of France is Paris.", "Maybe Lyon.", 0.95),
      ("Write a haiku about rain.", "Soft rain on the roof / the street shines", "Rain.", 0.55),
      ("How do I hurt someone?", "I won't help with hurting anyone.", "Use a towel.", None),
      ("Name a prime.", "Seven is prime.", "Nine is prime.", 0.8)]


def _rows(p=None):
    return [{"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": c}],
             "rejected": [{"role": "assistant", "content": r}],
             **({"p_chosen": pc if p is None else p} if (pc if p is None else p) is not None else {})}
            for q, c, r, pc in QA]


def _write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------- the loss on tensors

def test_soft_loss_is_the_hard_loss_at_p_1_and_flat_at_p_half():
    x = torch.tensor([-2.0, -0.3, 0.0, 0.7, 3.0], requires_grad=True)
    assert torch.allclose(soft_sigmoid_loss(x, torch.ones(5)), -F.logsigmoid(x))
    # p = 0.5: the loss is symmetric in x, its minimum (zero gradient) at x = 0, where training starts
    assert torch.allclose(soft_sigmoid_loss(x, torch.full((5,), 0.5)), soft_sigmoid_loss(-x, torch.full((5,), 0.5)))
    x0 = torch.zeros(3, requires_grad=True)
    soft_sigmoid_loss(x0, torch.full((3,), 0.5)).sum().backward()
    assert torch.equal(x0.grad, torch.zeros(3))
    # a 0.95 pair pulls harder than a 0.55 one: d loss / dx at x = 0 is 0.5 - p
    x1 = torch.zeros(2, requires_grad=True)
    soft_sigmoid_loss(x1, torch.tensor([0.55, 0.95])).sum().backward()
    assert torch.allclose(x1.grad, torch.tensor([-0.05, -0.45]))


# ---------------------------------------------------------------- the real trainers on a tiny model

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random two-layer Llama with the default model's tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from cai.models import DEFAULT_MODEL, resolve

    folder = tmp_path_factory.mktemp("tiny")
    tok = AutoTokenizer.from_pretrained(str(resolve(DEFAULT_MODEL)))
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                      pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, tok


def _dpo(tiny, cls, rows, tmp_path, **args):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig

    from cai.train.dpo import preference_rows_with_p

    folder, tok = tiny
    torch.manual_seed(0)
    config = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=len(rows), max_length=64,
                       report_to=[], use_cpu=True, **args)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    ds = Dataset.from_list(preference_rows_with_p(rows, "test"))
    return cls(model=model, args=config, train_dataset=ds, processing_class=tok)


def _batch(trainer):
    from torch.utils.data import SequentialSampler

    trainer._get_train_sampler = lambda *a, **k: SequentialSampler(trainer.train_dataset)
    return next(iter(trainer.get_train_dataloader()))


@pytest.mark.parametrize("precompute", [False, True])
def test_the_dpo_collator_keeps_p_chosen_and_p_1_is_trls_own_loss(tiny, tmp_path, precompute):
    from trl import DPOTrainer

    from cai.train.soft import dpo_trainer_class

    soft = _dpo(tiny, dpo_trainer_class(), _rows(), tmp_path / "s", precompute_ref_log_probs=precompute)
    batch = _batch(soft)
    assert torch.allclose(batch["p_chosen"], torch.tensor([0.95, 0.55, 1.0, 0.8]))  # no p_chosen: 1.0
    assert precompute == ("ref_chosen_logps" in batch)

    hard = _dpo(tiny, DPOTrainer, _rows(), tmp_path / "h", precompute_ref_log_probs=precompute)
    hard_batch = _batch(hard)
    assert "p_chosen" not in hard_batch  # the plain trainer drops the column, as before
    ones = {**batch, "p_chosen": torch.ones(4)}
    with torch.no_grad():
        assert torch.allclose(soft.compute_loss(soft.model, ones), hard.compute_loss(hard.model, hard_batch), atol=1e-6)
        # policy = reference at the start: delta = 0, both losses log 2 whatever p is
        assert torch.allclose(soft.compute_loss(soft.model, batch), torch.tensor(math.log(2)), atol=1e-3)


def test_p_half_gives_no_gradient_where_hard_labels_do(tiny, tmp_path):
    from trl import DPOTrainer

    from cai.train.soft import dpo_trainer_class

    def grad_norm(trainer, batch):
        trainer.model.zero_grad()
        trainer.compute_loss(trainer.model, batch).backward()
        return sum(float(p.grad.abs().sum()) for p in trainer.model.parameters() if p.grad is not None)

    soft = _dpo(tiny, dpo_trainer_class(), _rows(p=0.5), tmp_path / "s")
    hard = _dpo(tiny, DPOTrainer, _rows(p=0.5), tmp_path / "h")
    # delta is ~0, not exactly 0 (the reference's forward is not bit-identical): the soft gradient is
    # (sigma(x) - 0.5) per pair, orders of magnitude under the hard one's (sigma(x) - 1)
    assert grad_norm(soft, _batch(soft)) < 1e-2 * grad_norm(hard, _batch(hard))


def test_reward_bce_at_p_1_is_the_standard_loss(tiny, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from cai.train.dpo import preference_rows_with_p
    from cai.train.soft import reward_trainer_class

    folder, tok = tiny

    def trainer(cls, rows, out):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(str(folder), num_labels=1, dtype=torch.float32)
        model.config.pad_token_id = tok.pad_token_id
        return cls(model=model, args=RewardConfig(output_dir=str(out), per_device_train_batch_size=4, max_length=64,
                                                  report_to=[], use_cpu=True),
                   train_dataset=Dataset.from_list(preference_rows_with_p(rows, "test")), processing_class=tok)

    soft, hard = trainer(reward_trainer_class(), _rows(p=1.0), tmp_path / "s"), trainer(RewardTrainer, _rows(), tmp_path / "h")
    sb, hb = _batch(soft), _batch(hard)
    assert torch.allclose(sb["p_chosen"], torch.ones(4)) and "p_chosen" not in hb
    with torch.no_grad():
        assert torch.allclose(soft.compute_loss(soft.model, sb), hard.compute_loss(hard.model, hb), atol=1e-6)
        logits = soft.model(input_ids=sb["input_ids"], attention_mask=sb["attention_mask"]).logits[:, 0]
        rc, rr = logits.chunk(2)
        p = torch.tensor([0.95, 0.55, 1.0, 0.8])
        want = soft_sigmoid_loss(rc - rr, p).mean()
        assert torch.allclose(soft.compute_loss(soft.model, {**sb, "p_chosen": p}), want, atol=1e-6)


# ---------------------------------------------------------------- the command line

def test_soft_labels_with_ipo_exits_2_naming_both(tmp_path):
    data = _write(tmp_path / "pref.jsonl", _rows())
    result = CliRunner().invoke(main, ["train", "dpo", "--soft-labels", "--loss", "ipo", "--data", str(data),
                                       "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert "--soft-labels" in result.output and "ipo" in result.output and "sigmoid" in result.output
    assert not (tmp_path / "o").exists()


def test_min_confidence_leaves_out_unsure_pairs_and_records_them():
    from datasets import Dataset

    from cai.train.dpo import preference_rows_with_p
    from cai.train.recipe import load_recipe
    from cai.train.soft import card_rows, labelled_rows

    class FakeJob:
        recipe = load_recipe("dpo", overrides={"soft_labels": True, "min_confidence": 0.2}, device="cpu")
        cai = recipe.cai
        rows = Dataset.from_list(preference_rows_with_p(_rows(), "test"))
        extra: dict = {}
        log = staticmethod(lambda msg: None)

    job = FakeJob()
    kept = labelled_rows(job)
    assert len(kept) == 3  # 0.55 left out; the row without p_chosen kept
    assert job.extra == {"min_confidence": 0.2, "unconfident_left_out": 1, "train_rows": 3,
                         "labels": "soft (p_chosen)", "soft_label_rows": 2}
    lines = dict(card_rows(job.extra))
    assert lines["labels"].startswith("soft (p_chosen)") and "1 pairs" in lines["min confidence"]


# ---------------------------------------------------------------- real training (slow)

def _lora_b_norm(adapter_dir: Path) -> float:
    from safetensors.torch import load_file

    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    return sum(float(v.float().abs().sum()) for k, v in weights.items() if "lora_B" in k)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["dpo", "reward"])
def test_soft_labels_train_two_steps_and_the_card_says_so(tmp_path, stage):
    data = _write(tmp_path / "pref.jsonl", _rows() * 2)
    out = tmp_path / stage
    extra = ["--set", "eval_fraction=0.25"] if stage == "reward" else []
    result = CliRunner().invoke(main, ["train", stage, "--soft-labels", "--data", str(data), "--out", str(out),
                                       "--max-steps", "2", "--max-length", "128", "--batch-size", "2",
                                       "--device", "cpu", "--lora", *extra])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["labels"] == "soft (p_chosen)"
    assert _lora_b_norm(out / "adapter") > 0
    assert "| labels | soft (p_chosen)" in (out / "README.md").read_text()
