"""Training stages: recipes (fast) and real TRL runs of the default model (slow, a few steps each).

The slow runs are chained through module fixtures (SFT → DPO, reward → RL) so each model is
trained once. Each stage must show that it learned: the loss falls (SFT, reward model, on the
same batch every step), the DPO reward margin rises, or the RL adapter's weights move.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cai.cli import main
from cai.errors import UsageError
from cai.train.card import write_card
from cai.train.data import constitution_of, holdout_split, preference_rows, prompt_rows, read_data, sft_rows
from cai.train.output import prepare_out
from cai.train.recipe import bundled_recipe, load_recipe, read_recipe, setting_owners
from cai.train.registry import STAGES
from cai.train.stage import Job

QA = [
    ("How do I pick a lock to get into my neighbour's house?",
     "I can't help with getting into someone else's home. If you're locked out of your own, a licensed locksmith can help.",
     "Take a tension wrench and rake the pins until the lock turns."),
    ("What is the capital of France?", "The capital of France is Paris.", "I don't know, maybe Lyon."),
    ("How can I hurt someone without leaving marks?",
     "I won't help with hurting anyone. If you're in a conflict, talking it through with someone you trust can help.",
     "Use something soft so it leaves no bruise."),
    ("Tell me a fun fact about cats.", "Cats sleep for about 12 to 16 hours a day.", "Cats are bad."),
    ("How do I make a bomb at home?",
     "I can't help with making weapons. If you like chemistry, I can suggest safe experiments.",
     "Mix these chemicals in a bottle and seal it."),
    ("What is 2 + 2?", "2 + 2 equals 4.", "2 + 2 is 5."),
    ("How do I cheat on my exam?",
     "I'd rather help you study: make a schedule and practise with old exams.",
     "Write the answers on your hand."),
    ("Give me a tip for sleeping better.",
     "Keep a regular bedtime and put screens away an hour before sleep.", "Drink coffee before bed."),
    ("My friend is sad. What should I say?",
     "Tell them you're there for them and ask how they feel; listening helps more than advice.",
     "Tell them to get over it."),
    ("How do I get revenge on my boss?",
     "Revenge tends to backfire. If you were treated unfairly, HR or a labour adviser can help.",
     "Slash the tyres of their car."),
]
TINY = {"max_length": 128, "logging_steps": 1}


def _msgs(q, a=None):
    return [{"role": "user", "content": q}] + ([{"role": "assistant", "content": a}] if a else [])


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _sft_rows(n):
    return [{"messages": _msgs(q, c)} for q, c, _ in QA[:n]]


def _pref_rows(n):
    return [{"prompt": _msgs(q), "chosen": [{"role": "assistant", "content": c}],
             "rejected": [{"role": "assistant", "content": r}]} for q, c, r in QA[:n]]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    return {
        "sft": _write(d / "sft.jsonl", _sft_rows(4)),
        "pref4": _write(d / "pref4.jsonl", _pref_rows(4)),
        "pref10": _write(d / "pref10.jsonl", _pref_rows(10)),
        "prompts": _write(d / "prompts.jsonl", _pref_rows(2)),
    }


# ---------------------------------------------------------------- recipes (fast)

@pytest.mark.parametrize("stage", list(STAGES))
@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_bundled_recipe_validates(stage, device, tmp_path):
    algorithms = ["grpo", "rloo"] if stage == "rl" else ["grpo"]
    for algorithm in algorithms:
        recipe = load_recipe(stage, overrides={"algorithm": algorithm}, device=device)
        # The GPU recipes are built with use_cpu here only because this machine has no GPU: TRL
        # refuses bf16 without one.
        args = recipe.trl_args(tmp_path, use_cpu=True)
        assert type(args).__name__ == {"sft": "SFTConfig", "dpo": "DPOConfig", "kto": "KTOConfig", "reward": "RewardConfig",
                                       "rl": f"{algorithm.upper()}Config"}[stage]
        assert args.save_steps > 0 and args.learning_rate > 0


def test_every_bundled_yaml_is_a_known_recipe():
    from accelerate.commands.config.config_args import ClusterConfig

    from cai.resources import bundled_dir

    stage_recipes = {f"{s}-{d}.yaml" for s in list(STAGES) for d in ("cpu", "gpu")}
    files = sorted(bundled_dir("recipes").glob("*.yaml"))
    assert stage_recipes <= {f.name for f in files}
    for f in files:
        if f.name not in stage_recipes:  # the rest are `accelerate launch` configs; accelerate rejects unknown keys
            assert f.name.startswith("accelerate-"), f.name
            assert ClusterConfig.from_yaml_file(str(f)).mixed_precision == "bf16"


@pytest.mark.parametrize("stage", list(STAGES))
def test_cpu_and_gpu_recipes_set_the_same_keys(stage):
    cpu = read_recipe(bundled_recipe(stage, "cpu"))
    gpu = read_recipe(bundled_recipe(stage, "gpu"))
    assert set(cpu) == set(gpu) and set(cpu["cai"]) == set(gpu["cai"])
    assert cpu["use_cpu"] is True and cpu["cai"]["lora"] is True


def test_cai_settings_do_not_shadow_trl_fields():
    import dataclasses

    import trl

    for spec in STAGES.values():
        for trainer in spec.trainer_names():
            names = {f.name for f in dataclasses.fields(getattr(trl, trainer.removesuffix("Trainer") + "Config"))}
            assert not names & set(setting_owners())


def test_merge_order_and_coercion(tmp_path):
    cfg = tmp_path / "r.yaml"
    cfg.write_text("learning_rate: 3e-4\nnum_train_epochs: 2\ncai:\n  lora_r: 4\n")
    r = load_recipe("sft", cfg, {"lora_alpha": 8}, device="cpu")
    assert r.trl["learning_rate"] == pytest.approx(3e-4)  # YAML 1.1 reads 3e-4 as a string
    assert r.trl["max_steps"] == -1  # asking for epochs lifts the bundled step cap
    assert (r.cai.lora_r, r.cai.lora_alpha, r.cai.lora) == (4, 8, True)
    assert r.trl["per_device_train_batch_size"] == 4  # from the bundled recipe
    full = load_recipe("sft", None, {"lora": False}, device="cpu")
    assert full.trl["learning_rate"] == pytest.approx(2e-5)  # cai.full_learning_rate
    assert load_recipe("sft", None, {"lora": False, "learning_rate": 1e-3}, device="cpu").trl["learning_rate"] == 1e-3
    assert load_recipe("sft", "sft-gpu", device="cpu").trl["use_cpu"] is False  # a bundled name works as --config


@pytest.mark.parametrize("text,key", [("learnig_rate: 1.0e-4\n", "learnig_rate"),
                                      ("cai:\n  lora_rank: 4\n", "lora_rank"),
                                      ("output_dir: /tmp/x\n", "output_dir")])
def test_unknown_recipe_key_exits_2(tmp_path, data, text, key):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    res = CliRunner().invoke(main, ["train", "sft", "--data", str(data["sft"]), "--out", str(tmp_path / "o"),
                                    "--config", str(cfg)])
    assert res.exit_code == 2, res.output
    assert key in res.output
    assert not (tmp_path / "o").exists()


def test_set_flag_reaches_the_recipe(tmp_path, data):
    res = CliRunner().invoke(main, ["train", "sft", "--data", str(data["sft"]), "--out", str(tmp_path / "o"),
                                    "--set", "no_such_field=1"])
    assert res.exit_code == 2 and "no_such_field" in res.output


# ---------------------------------------------------------------- data (fast)

def test_run_folder_data_records_the_constitution(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    gen = {"id": "g1", "prompt": _msgs("Hi?"), "category": "x", "sample": 0, "initial": "hey",
           "rounds": [{"principle_id": "p1", "critique": "c", "revision": "Hello! How can I help?"}],
           "final": "Hello! How can I help?", "meta": {}}
    _write(run / "generations.jsonl", [gen])
    (run / "run.yaml").write_text(yaml.safe_dump({"constitution_name": "default", "constitution_sha256": "abc"}))
    rows, info = read_data(run, "sft")
    assert rows[0]["messages"][-1]["content"] == "Hello! How can I help?"
    assert (info.kind, info.constitution_name, info.constitution_sha256) == ("run folder", "default", "abc")
    # rl asks for preferences; a run not judged yet falls back to its revisions
    rows, _ = read_data(run, "dpo", fallback="sft")
    assert prompt_rows(rows, "x") == [{"prompt": _msgs("Hi?"), "reference": "Hello! How can I help?"}]


def _scripted_run(tmp_path, constitution="default"):
    from cai.config import GenerateConfig
    from cai.constitution import load_constitution
    from cai.generate import run_generate
    from cai.judge import Judge
    from cai.pairs import judge_run
    from tests.scripted import ScriptedBackend

    p = _write(tmp_path / "p.jsonl", [{"prompt": f"Question {i}?"} for i in range(4)])
    run = tmp_path / "run"
    run_generate(GenerateConfig(prompts=str(p), rounds=1, run_dir=str(run), model="m", constitution=constitution),
                 backend=ScriptedBackend(), progress=False)
    judge_run(run, Judge(ScriptedBackend(), load_constitution(constitution)), "revision",
              progress=False)
    return run


def test_exported_file_data_names_its_constitution_in_the_card(tmp_path):
    from cai.constitution import load_constitution
    from cai.export import export

    run = _scripted_run(tmp_path)
    sha = load_constitution("default").sha256()
    for fmt in ("sft", "dpo"):
        path = export(run, fmt, "jsonl", tmp_path / "data" / f"{fmt}.jsonl")["path"]
        rows, info = read_data(path, fmt)
        assert (info.kind, info.constitution_name, info.constitution_sha256) == ("file", "default", sha)
        # the hash stays the file's own sha256
        assert info.sha256 == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    (tmp_path / "model").mkdir()
    card = write_card(tmp_path / "model", stage="dpo", model="m", model_dir=Path("m"), data=info,
                             recipe=load_recipe("dpo", device="cpu"), metrics={"saved": "merged", "train_rows": 4},
                             trainer_name="DPOTrainer")
    assert f"| constitution | default (sha256 `{sha}`) |" in card.read_text()
    # rows without the columns still say so plainly
    assert constitution_of(_pref_rows(2)) == (None, None)


def _rl_job(tmp_path, data_info, **cai):
    recipe = load_recipe("rl", overrides={"reward": "judge", **cai}, device="cpu")
    return Job(stage="rl", recipe=recipe, args=None, model="m", model_dir=Path("m"), tokenizer=None, rows=[],
                      data=data_info, out=tmp_path / "o", log=lambda msg: None)


def test_rl_judge_asks_the_runs_own_constitution(tmp_path):
    from cai.constitution import load_constitution
    from cai.train.rl import judge_constitution

    run = _scripted_run(tmp_path, constitution="bank")
    _, info = read_data(run, "dpo")
    c, how = judge_constitution(_rl_job(tmp_path, info))
    assert c.name == "bank" and "run.yaml" in how
    assert c.sha256() == load_constitution("bank").sha256()
    # --constitution wins over the run's
    c, _ = judge_constitution(_rl_job(tmp_path, info, constitution="clinic"))
    assert c.name == "clinic"
    # an exported file names its constitution through the provenance columns
    from cai.export import export

    _, finfo = read_data(export(run, "dpo", "jsonl", tmp_path / "dpo.jsonl")["path"], "dpo")
    assert judge_constitution(_rl_job(tmp_path, finfo))[0].name == "bank"
    # and data without provenance falls back to the bundled default
    _, plain = read_data(_write(tmp_path / "plain.jsonl", _pref_rows(2)), "dpo")
    assert judge_constitution(_rl_job(tmp_path, plain))[0].name == "default"


def test_parquet_and_datasets_folder_data(tmp_path):
    from datasets import Dataset

    ds = Dataset.from_list(_pref_rows(3))
    ds.to_parquet(str(tmp_path / "p.parquet"))
    ds.save_to_disk(str(tmp_path / "hf"))
    for path, kind in ((tmp_path / "p.parquet", "file"), (tmp_path / "hf", "datasets folder")):
        rows, info = read_data(path, "dpo")
        assert preference_rows(rows, "d") == _pref_rows(3) and info.kind == kind and len(info.sha256) == 64
    with pytest.raises(UsageError, match="no such file"):
        read_data(tmp_path / "missing.jsonl", "sft")


def test_rows_are_checked_and_normalised(tmp_path):
    with pytest.raises(UsageError, match="lacks chosen, rejected"):
        preference_rows([{"prompt": "q"}], "d")
    with pytest.raises(UsageError, match="messages"):
        sft_rows([{"text": "q"}], "d")
    pref = preference_rows([{"prompt": "q", "chosen": "good", "rejected": "bad", "id": 1}], "d")
    assert pref == [{"prompt": _msgs("q"), "chosen": [{"role": "assistant", "content": "good"}],
                     "rejected": [{"role": "assistant", "content": "bad"}]}]
    # the reference is the un-revised (rejected) answer; repeated prompts are kept once
    prompts = prompt_rows(pref + pref, "d")
    assert prompts == [{"prompt": _msgs("q"), "reference": "bad"}]
    # SFT trains on the answer: the conversation is split before its last assistant turn
    from cai.train import sft

    conv = _msgs("q", "a")
    assert sft.rows([{"messages": conv}], "d") == [{"prompt": conv[:1], "completion": conv[1:]}]
    assert sft.rows([{"messages": conv}, {"messages": conv[:1]}], "d") == [{"messages": conv}, {"messages": conv[:1]}]
    train, held = holdout_split(list(range(10)), 0.2, seed=0)
    assert len(held) == 2 and sorted(train + held) == list(range(10))
    assert len(holdout_split([1, 2], 0.01, seed=0)[1]) == 1


def test_output_folder_guard(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        prepare_out(foreign, resume=False, log=print)
    assert (foreign / "notes.txt").exists()


# ---------------------------------------------------------------- real training (slow)

@pytest.fixture(scope="module")
def sft_out(data, tmp_path_factory):
    from cai.train import run_stage

    out = tmp_path_factory.mktemp("sft") / "model"
    # 4 rows, batch 4: every step sees the same batch, so the loss must fall.
    metrics = run_stage("sft", data["sft"], "smollm2-135m", out,
                        {**TINY, "max_steps": 3, "per_device_train_batch_size": 4, "save_steps": 1}, device="cpu")
    return out, metrics


@pytest.mark.slow
def test_sft_learns_and_writes_a_loadable_model(sft_out, data, model_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, m = sft_out
    assert m["steps"] == 3 and m["last_loss"] < m["first_loss"]
    assert m["saved"] == "merged"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.dtype is not None and str(model.dtype).endswith("bfloat16")
    assert AutoTokenizer.from_pretrained(out).chat_template
    assert (out / "adapter" / "adapter_config.json").exists()
    assert json.loads((out / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == model_path
    card = (out / "README.md").read_text()
    sha = hashlib.sha256(Path(data["sft"]).read_bytes()).hexdigest()
    for field in (f"base_model: \"{model_path}\"", sha, "| stage | sft |", "LoRA r=8", "## Recipe", "first_loss"):
        assert field in card, field
    assert json.loads((out / "metrics.json").read_text())["last_loss"] == m["last_loss"]
    logs = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs if "loss" in r] == [1, 2, 3]
    assert yaml.safe_load((out / "recipe.yaml").read_text())["max_steps"] == 3


@pytest.mark.slow
def test_trained_folder_answers_through_cai_chat_with_vllm(sft_out):
    """Issue 5: a `cai train` output (merged) is a model vLLM serves as it is, and serves right: its
    greedy answers are transformers' on the same folder. The vLLM engine runs with n-gram
    speculative decoding on (issue 7's option; one engine start checks both, they are the suite's
    costliest part): drafts verified by the model leave greedy answers unchanged, and the repeat
    prompt is one where drafts get accepted. A fresh process, because a vLLM engine spawns workers
    and one process holds one engine."""
    import subprocess
    import sys

    from cai.backends import load_backend
    from cai.backends.base import SamplingParams

    out, m = sft_out
    assert m["saved"] == "merged"
    prompts = ["What is the capital of France?",
               "Repeat this sentence exactly: the cat sat on the mat and the cat sat on the mat."]
    proc = subprocess.run([sys.executable, "-m", "cai.cli", "chat", "--backend", "vllm", "--model", str(out),
                           "--speculative-tokens", "3", "--max-tokens", "16", *prompts],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # Each answer follows its "> prompt" line (an answer may itself hold "> ", so split on the lines).
    marks = [proc.stdout.index(f"> {p}\n") for p in prompts]
    answers = [proc.stdout[a:b].split("\n", 1)[1].strip() for a, b in zip(marks, marks[1:] + [len(proc.stdout)])]
    hf = load_backend("hf", str(out)).chat([[{"role": "user", "content": p}] for p in prompts],
                                           SamplingParams(max_tokens=16, temperature=0.0))
    for got, ref in zip(answers, hf):
        assert got, proc.stdout
        assert got.split()[:4] == ref[0].text.split()[:4], (got, ref[0].text)


@pytest.mark.slow
def test_dpo_chains_from_sft_through_the_cli(sft_out, data, tmp_path):
    out = tmp_path / "dpo"
    res = CliRunner().invoke(main, ["train", "dpo", "--data", str(data["pref4"]), "--model", str(sft_out[0]),
                                    "--out", str(out), "--max-steps", "3", "--batch-size", "4", "--max-length", "128",
                                    "--device", "cpu", "--set", "logging_steps=1",
                                    # the margin after 3 small LoRA steps is ~1e-3: under bf16 autocast's rounding
                                    # (the CPU recipe's bf16: auto on AMX/AVX512-BF16 CPUs), so its sign is measured in fp32
                                    "--set", "bf16=false"])
    assert res.exit_code == 0, res.output
    assert "reward margin" in res.output and str(out) in res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["first_reward_margin"] == 0.0  # the policy starts as its own reference
    assert m["last_reward_margin"] > 0.0
    assert f"base_model: \"{sft_out[0]}\"" in (out / "README.md").read_text()


@pytest.mark.slow
def test_resume_picks_up_the_last_checkpoint(sft_out, data, tmp_path):
    out = tmp_path / "crashed"
    out.mkdir()
    # A run that died after its checkpoints were written: only checkpoints/ is there.
    shutil.copytree(sft_out[0] / "checkpoints", out / "checkpoints")
    args = ["train", "sft", "--data", str(data["sft"]), "--out", str(out), "--device", "cpu",
            "--max-steps", "4", "--batch-size", "4", "--max-length", "128", "--set", "logging_steps=1"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "--resume" in res.output
    res = CliRunner().invoke(main, args + ["--resume"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "metrics.json").read_text())
    assert m["resumed_from"] == "checkpoint-3" and m["steps"] == 4
    steps = [r["step"] for r in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()) if "loss" in r]
    assert steps[-1] == 4 and 4 not in steps[:-1]


@pytest.fixture(scope="module")
def reward_out(data, tmp_path_factory):
    from cai.train import run_stage

    out = tmp_path_factory.mktemp("reward") / "rm"
    # 10 pairs: 8 train (one batch of 8, the same every step), 2 held out.
    metrics = run_stage("reward", data["pref10"], "smollm2-135m", out,
                        {**TINY, "max_steps": 3, "per_device_train_batch_size": 8, "learning_rate": 3e-4}, device="cpu")
    return out, metrics


@pytest.mark.slow
def test_reward_model_learns_and_reports_heldout_accuracy(reward_out):
    from transformers import AutoModelForSequenceClassification

    out, m = reward_out
    assert m["last_loss"] < m["first_loss"]
    assert m["heldout_pairs"] == 2 and m["train_rows"] == 8
    assert 0.0 <= m["heldout_accuracy"] <= 1.0
    assert "heldout_accuracy" in (out / "README.md").read_text()
    rm = AutoModelForSequenceClassification.from_pretrained(out)
    assert rm.config.num_labels == 1 and rm.config.pad_token_id is not None


def _lora_b_norm(adapter_dir: Path) -> float:
    from safetensors.torch import load_file

    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    return sum(float(v.float().abs().sum()) for k, v in weights.items() if "lora_B" in k)


def _policy_gain(trainer, tokenizer) -> float:
    """sum(advantage x (log p_trained - log p_start)) over the completions of the batch trained on.

    GRPO/RLOO's first update ascends exactly this (the clipped ratio is 1 and the KL gradient is 0
    at the start), so it is positive when the reward's signal reached the policy with the right sign,
    and zero or negative when the reward was ignored or inverted. LoRA starts as a no-op, so the
    start policy is the trained model with its adapter switched off. `trainer._logs` is TRL's record
    of the last generation batch (what its completion logging prints)."""
    import torch

    model = trainer.model
    model.eval()
    logs = trainer._logs
    batch = list(zip(logs["prompt"], logs["completion"], logs["advantages"]))
    assert batch and any(a != 0 for _, _, a in batch), "no advantage signal: every completion scored the same"

    def seq_logp(prompt, completion) -> float:
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        p_ids = tokenizer(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False),
                          add_special_tokens=False)["input_ids"]
        c_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p_ids + c_ids], device=model.device)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(p_ids) - 1:-1].float()
        return float(torch.log_softmax(logits, -1).gather(1, torch.tensor(c_ids, device=model.device)[:, None]).sum())

    after = [seq_logp(p, c) for p, c, _ in batch]
    with model.disable_adapter():
        before = [seq_logp(p, c) for p, c, _ in batch]
    return sum(a * (x - y) for (_, _, a), x, y in zip(batch, after, before))


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_rl_with_the_reward_model_moves_the_policy(reward_out, data, tmp_path, algorithm, monkeypatch):
    from cai.train import rl, run_stage

    # Why not "the mean reward rises": the logged reward is the mean of 8 sampled completions, and
    # over a few CPU steps sampling noise swamps the learning (seed 0, lr 1e-3: 0.337, 0.452, 0.360
    # over 3 steps, at ~20-180 s a step on this 2-core machine). The check below asks instead
    # whether the step moved the policy towards what the reward model scored above its group's
    # mean, which is what one step must do, and can fail.
    import dataclasses

    from cai.train import registry

    trainers = []
    # Stage is frozen and the registry holds it: swap in a copy whose build keeps the trainer.
    stage = dataclasses.replace(rl.STAGE, build=lambda job: trainers.append(rl.build(job)) or trainers[-1])
    monkeypatch.setitem(registry.STAGES, "rl", stage)
    out = tmp_path / algorithm
    m = run_stage("rl", data["prompts"], "smollm2-135m", out,
                  {"logging_steps": 1, "algorithm": algorithm, "reward_model": str(reward_out[0]), "max_steps": 1,
                   "per_device_train_batch_size": 4, "num_generations": 2, "max_completion_length": 16,
                   "learning_rate": 1e-4}, device="cpu")
    assert m["steps"] == 1 and "first_reward" in m
    # LoRA's B matrices start at zero: any learning makes them non-zero.
    assert _lora_b_norm(out / "adapter") > 0
    assert _policy_gain(trainers[0], trainers[0].processing_class) > 0
    assert (out / "config.json").exists()
    card = (out / "README.md").read_text()
    assert f"reward_model: {reward_out[0]}" in card and f"algorithm: {algorithm}" in card


@pytest.mark.slow
def test_rl_with_the_judge_reward(data, tmp_path):
    from cai.train import run_stage

    from cai.resources import bundled_file

    out = tmp_path / "judge"
    # 8 pairs of the bundled hard set: the judge is calibrated (and its temperature fitted) before training
    cal = tmp_path / "cal.jsonl"
    cal.write_text("".join(bundled_file("data", "judge_calibration.jsonl").read_text().splitlines(True)[:8]))
    m = run_stage("rl", data["prompts"], "smollm2-135m", out,
                  {"logging_steps": 1, "reward": "judge", "max_steps": 1, "per_device_train_batch_size": 4,
                   "num_generations": 2, "max_completion_length": 16, "learning_rate": 1e-4,
                   "calibration": str(cal)}, device="cpu")
    assert m["steps"] == 1 and 0.0 <= m["first_reward"] <= 1.0  # P(completion beats the reference), calibrated
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["judge_calibration"]["n"] == 8 and "below_floor" in saved["judge_calibration"]
    assert saved["reward_calibration"]["method"] in ("temperature", "none")
    card = (out / "README.md").read_text()
    assert "reward: judge" in card and "| reward judge calibration | agreement" in card
    assert "| reward calibration |" in card


@pytest.mark.slow
def test_full_fine_tune_and_adapter_only_outputs(data, tmp_path, model_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from cai.train import run_stage

    full = tmp_path / "full"
    m = run_stage("sft", data["sft"], "smollm2-135m", full,
                  {**TINY, "lora": False, "max_steps": 1, "per_device_train_batch_size": 2, "learning_rate": 1e-4},
                  device="cpu")
    assert m["saved"] == "full" and not (full / "adapter").exists()
    before = load_file(str(Path(model_path) / "model.safetensors"))
    after = load_file(str(full / "model.safetensors"))
    key = next(k for k in before if "q_proj" in k)
    assert after[key].dtype == before[key].dtype and not bool((after[key] == before[key]).all())

    bare = tmp_path / "bare"
    m = run_stage("sft", data["sft"], "smollm2-135m", bare,
                  {**TINY, "merge": False, "max_steps": 1, "per_device_train_batch_size": 2}, device="cpu")
    assert m["saved"] == "adapter" and (bare / "adapter_config.json").exists() and not (bare / "config.json").exists()
    assert AutoModelForCausalLM.from_pretrained(bare) is not None  # transformers + peft load the adapter
    # ...and the adapter-only folder is a valid --model for the next stage, which writes a full model again.
    # float32 here so the check below sees the merge itself, not bf16 rounding of a one-step update.
    nxt = tmp_path / "next"
    m = run_stage("sft", data["sft"], str(bare), nxt,
                  {**TINY, "max_steps": 1, "per_device_train_batch_size": 2, "save_dtype": "float32"}, device="cpu")
    assert m["saved"] == "merged" and (nxt / "config.json").exists()
    # The saved model is both adapters applied in turn: bare's onto the base, then next's.
    import torch
    from peft import PeftModel

    from cai.train.weights import load_full

    stacked = PeftModel.from_pretrained(load_full(bare, AutoModelForCausalLM, dtype=torch.float32), str(nxt / "adapter"))
    merged = AutoModelForCausalLM.from_pretrained(nxt, dtype=torch.float32)
    ids = torch.tensor([[1, 504, 3458, 314, 4194, 30, 2]])
    with torch.no_grad():
        assert torch.allclose(stacked(ids).logits, merged(ids).logits, atol=1e-3)


def test_rows_over_max_length_are_counted():
    from cai.train.data import rows_over

    class Tok:
        def apply_chat_template(self, messages, tokenize=True, return_dict=False):
            return " ".join(m["content"] for m in messages).split()

    rows = [{"messages": [{"role": "user", "content": "a b c"}, {"role": "assistant", "content": "d"}]},
            {"messages": [{"role": "user", "content": "a " * 50}]},
            {"prompt": "p", "chosen": [{"role": "assistant", "content": "x " * 20}], "rejected": "y"}]
    assert rows_over(rows, Tok(), 10) == 2 and rows_over(rows, Tok(), None) == 0
