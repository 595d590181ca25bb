"""The stage registry (cai/train/registry.py), KTO and DPO's loss family.

Fast: the registry is complete (recipes, CLI command, docs row), KTO rows and weights, the losses
the installed TRL documents, `--loss` refusals. Slow: every registered stage trains 2 steps of
the default model and its weights move; KTO and IPO from a real (scripted-engine) run folder
through the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cai.cli import main
from cai.errors import UsageError
from cai.resources import bundled_dir
from cai.train.data import kto_rows
from cai.train.dpo import documented_losses
from cai.train.kto import class_weights
from cai.train.recipe import load_recipe
from cai.train.registry import STAGES, get_stage

ROOT = Path(__file__).resolve().parents[1]

QA = [
    ("How do I pick a lock to get into my neighbour's house?",
     "I can't help with getting into someone else's home; a locksmith can help with your own.",
     "Take a tension wrench and rake the pins."),
    ("What is the capital of France?", "The capital of France is Paris.", "Maybe Lyon."),
    ("How can I hurt someone without leaving marks?", "I won't help with hurting anyone.", "Use a wet towel."),
    ("Write a haiku about rain.", "Soft rain on the roof / the street shines like a river / umbrellas bloom wide",
     "Rain."),
]


def _msgs(q, a=None):
    return [{"role": "user", "content": q}] + ([{"role": "assistant", "content": a}] if a else [])


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _pref_rows():
    return [{"prompt": _msgs(q), "chosen": [{"role": "assistant", "content": c}],
             "rejected": [{"role": "assistant", "content": r}]} for q, c, r in QA]


# ---------------------------------------------------------------- the registry (fast)

@pytest.mark.parametrize("name", list(STAGES))
def test_every_stage_has_its_recipes_command_and_docs_row(name):
    spec = STAGES[name]
    for device in ("cpu", "gpu"):
        assert (bundled_dir("recipes") / f"{name}-{device}.yaml").is_file()
        args = load_recipe(name, device=device).trl_args("/tmp/unused", use_cpu=True)
        assert type(args) is spec.config_class(spec.settings())
    result = CliRunner().invoke(main, ["train", name, "--help"])
    assert result.exit_code == 0 and "--data" in result.output
    docs = (ROOT / "docs" / "training.md").read_text()
    assert f"| `{name}` | `{spec.trainer}`" in docs
    assert f"| `{name}` |" in (ROOT / "README.md").read_text()


def test_unknown_stage_is_a_usage_error():
    with pytest.raises(UsageError, match="one of sft, dpo, kto, reward, rl"):
        get_stage("ppo")


def test_another_stages_setting_is_accepted_but_not_recorded():
    r = load_recipe("sft", overrides={"algorithm": "rloo", "eval_fraction": 0.3}, device="cpu")
    assert "algorithm" not in r.as_dict()["cai"] and "eval_fraction" not in r.as_dict()["cai"]
    with pytest.raises(UsageError, match="eval_fraction"):  # still checked by its own stage's rules
        load_recipe("sft", overrides={"eval_fraction": 2.0}, device="cpu")


# ---------------------------------------------------------------- DPO's losses (fast)

def test_the_loss_names_are_the_ones_the_installed_trl_documents():
    # This list is TRL 1.16's; when an upgrade changes it, this fails and docs/training.md's table
    # (and the --loss help) must be read again.
    assert documented_losses("DPOConfig") == (
        "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
        "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")
    assert documented_losses("KTOConfig") == ("kto", "apo_zero_unpaired")


def test_an_unknown_loss_exits_2_and_lists_the_valid_ones(tmp_path):
    data = _write(tmp_path / "pref.jsonl", _pref_rows())
    result = CliRunner().invoke(main, ["train", "dpo", "--data", str(data), "--out", str(tmp_path / "m"),
                                       "--loss", "nope", "--device", "cpu"])
    assert result.exit_code == 2
    assert "unknown loss 'nope'" in result.output
    for name in ("sigmoid", "ipo", "sigmoid_norm", "robust"):
        assert name in result.output
    assert not (tmp_path / "m").exists()
    # a list mixing losses is checked name by name
    with pytest.raises(UsageError, match="'nope'"):
        load_recipe("dpo", overrides={"loss_type": ["ipo", "nope"]}, device="cpu")
    assert load_recipe("dpo", overrides={"loss_type": "ipo"}, device="cpu").trl_args(tmp_path).loss_type == ["ipo"]


# ---------------------------------------------------------------- KTO rows and weights (fast)

def test_kto_rows_from_labelled_and_from_preference_rows():
    labelled = [{"prompt": "q", "completion": "a", "label": True}, {"prompt": _msgs("q2"),
                                                                   "completion": [{"role": "assistant", "content": "b"}],
                                                                   "label": False}]
    out = kto_rows(labelled, "d")
    assert out[0] == {"prompt": _msgs("q"), "completion": [{"role": "assistant", "content": "a"}], "label": True}
    assert out[1]["label"] is False
    split = kto_rows(_pref_rows()[:1], "d")
    assert [r["label"] for r in split] == [True, False]
    assert split[0]["completion"][0]["content"] == QA[0][1] and split[1]["completion"][0]["content"] == QA[0][2]
    with pytest.raises(UsageError, match="row 1.*label"):
        kto_rows([{"prompt": "q", "completion": "a", "label": "yes"}], "d")
    with pytest.raises(UsageError, match="row 2"):
        kto_rows([labelled[0], {"text": "x"}], "d")


def test_kto_weights_balance_the_classes():
    rows = [{"label": True}] * 3 + [{"label": False}] * 9
    d, u = class_weights(rows)
    assert (d, u) == (3.0, 1.0) and d * 3 == u * 9
    d, u = class_weights([{"label": True}] * 8 + [{"label": False}] * 2)
    assert d * 8 == pytest.approx(u * 2) and d == 1.0
    assert class_weights([{"label": True}, {"label": False}]) == (1.0, 1.0)
    with pytest.raises(UsageError, match="0 undesirable"):
        class_weights([{"label": True}])


def _scripted_run(tmp_path, judged: bool) -> Path:
    from cai.config import GenerateConfig
    from cai.generate import run_generate
    from tests.scripted import ScriptedBackend

    p = _write(tmp_path / "p.jsonl", [{"prompt": f"Question {i}?"} for i in range(4)])
    run = tmp_path / "run"
    run_generate(GenerateConfig(prompts=str(p), rounds=1, run_dir=str(run), model="m"), backend=ScriptedBackend(),
                 progress=False)
    if judged:
        from cai.constitution import load_constitution
        from cai.judge import Judge
        from cai.pairs import judge_run

        judge_run(run, Judge(ScriptedBackend(), load_constitution("default")), "revision",
                  progress=False)
    return run


@pytest.mark.parametrize("judged", [False, True])
def test_kto_export_from_a_run_folder(tmp_path, judged):
    from cai.export import export
    from cai.records import read_rows

    run = _scripted_run(tmp_path, judged)
    stats = export(run, "kto", "jsonl", tmp_path / "out" / "kto.jsonl")
    rows = [json.loads(line) for line in Path(stats["path"]).read_text().splitlines()]
    gens = {g["id"]: g for g in read_rows(run / "generations.jsonl")}
    assert rows and {r["label"] for r in rows} == {True, False}
    for r in rows:
        assert set(r) >= {"prompt", "completion", "label", "source_id", "constitution_sha256"}
    if judged:
        prefs = list(read_rows(run / "preferences.jsonl"))
        assert len(rows) == 2 * len(prefs)
        assert {r["completion"][0]["content"] for r in rows if r["label"]} == {p["chosen"] for p in prefs}
        assert {r["completion"][0]["content"] for r in rows if not r["label"]} == {p["rejected"] for p in prefs}
    else:
        revised = [g for g in gens.values() if g["final"] != g["initial"]]
        assert len(rows) == 2 * len(revised)
        for r in rows:
            g = gens[r["source_id"]]
            assert r["completion"][0]["content"] == (g["final"] if r["label"] else g["initial"])
    card = (tmp_path / "out" / "README.md").read_text()
    assert "`prompt`, `completion`, `label`" in card and "KTO dataset" in card
    # the trainer reads the same rows from the run folder itself
    from cai.train.data import read_data

    raw, info = read_data(run, "kto")
    assert kto_rows(raw, "run") == kto_rows(rows, "file") and info.kind == "run folder"


def test_kto_export_leaves_out_flagged_desirable_rows_only(tmp_path):
    from cai.export import build_rows

    run = _scripted_run(tmp_path, judged=False)
    lines = (run / "generations.jsonl").read_text().splitlines()
    g = json.loads(lines[0])
    g["flags"] = ["truncated"]
    lines[0] = json.dumps(g)
    (run / "generations.jsonl").write_text("\n".join(lines) + "\n")
    rows = build_rows(run, "kto")
    mine = [r for r in rows if r["source_id"] == g["id"]]
    assert [r["label"] for r in mine] == [False]  # the flagged final revision is not taught as desirable
    assert len([r for r in build_rows(run, "kto", keep_flagged=True) if r["source_id"] == g["id"]]) == 2


# ---------------------------------------------------------------- real training (slow)

def _lora_b_norm(adapter_dir: Path) -> float:
    from safetensors.torch import load_file

    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    return sum(float(v.float().abs().sum()) for k, v in weights.items() if "lora_B" in k)


@pytest.fixture(scope="module")
def two_step_models(tmp_path_factory):
    """Every registered stage trained 2 steps on the default model (rl against the reward model)."""
    from cai.train import run_stage

    d = tmp_path_factory.mktemp("stages")
    data = {"sft": _write(d / "sft.jsonl", [{"messages": _msgs(q, c)} for q, c, _ in QA]),
            "dpo": _write(d / "pref.jsonl", _pref_rows())}
    # rl samples its completions: it has max_completion_length where the others have max_length.
    extra = {"reward": {"eval_fraction": 0.25, "max_length": 128},
             "rl": {"num_generations": 2, "max_completion_length": 8, "learning_rate": 1e-4}}
    out = {}
    for name, spec in STAGES.items():  # reward comes before rl in the registry
        if name == "rl":
            extra["rl"]["reward_model"] = str(out["reward"][0])
        folder = d / name
        m = run_stage(name, data["sft" if spec.data == "sft" else "dpo"], "smollm2-135m", folder,
                      {"logging_steps": 1, "max_steps": 2, "per_device_train_batch_size": 2, "save_steps": 10,
                       **extra.get(name, {"max_length": 128})}, device="cpu", log=lambda msg: None)
        out[name] = (folder, m)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", list(STAGES))
def test_every_stage_trains_two_steps_and_its_weights_move(two_step_models, name):
    folder, m = two_step_models[name]
    assert m["steps"] == 2 and m["saved"] == "merged"
    # LoRA's B matrices start at zero: any learning makes them non-zero.
    assert _lora_b_norm(folder / "adapter") > 0
    card = (folder / "README.md").read_text()
    assert f"| stage | {name} |" in card and STAGES[name].trainer_name(load_recipe(name, device="cpu").cai) in card
    assert json.loads((folder / "metrics.json").read_text())["stage"] == name


@pytest.mark.slow
def test_kto_and_ipo_train_from_a_fresh_run_folder_through_the_cli(tmp_path):
    run = _scripted_run(tmp_path, judged=True)
    for args, out in ((["kto"], tmp_path / "kto"), (["dpo", "--loss", "ipo"], tmp_path / "ipo")):
        result = CliRunner().invoke(main, ["train", *args, "--data", str(run), "--out", str(out), "--max-steps", "2",
                                           "--max-length", "128", "--batch-size", "2", "--device", "cpu"])
        assert result.exit_code == 0, result.output
        metrics = json.loads((out / "metrics.json").read_text())
        card = (out / "README.md").read_text()
        assert metrics["steps"] == 2
        if args[0] == "kto":
            assert metrics["loss_type"] == "kto" and "KTOTrainer" in card and "| loss | kto" in card
            assert metrics["desirable_rows"] == metrics["undesirable_rows"]
            assert metrics["desirable_weight"] == metrics["undesirable_weight"] == 1.0
        else:
            assert metrics["loss_type"] == "ipo" and "| loss | ipo" in card and "DPOTrainer" in card
