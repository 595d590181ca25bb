"""Mixing sources for training (cai/train/mix.py): `--data A:0.7 --data B:0.3`, `PATH:rows=N`, a
recipe's `datasets:` list.

Fast: the training rows `cai train` builds (`training_data`, no trainer): counts per source by
weight and by `rows:`, the `source` column, the seed, caps and --oversample, the recipe form,
wrong-kind sources exiting 2 through the CLI before anything loads, the card's sources table and
metrics.json's `data.sources`. Slow: `cai train sft` on a run folder mixed with a JSONL file, 2 steps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cai.cli import main
from cai.errors import UsageError
from cai.train import registry
from cai.train.card import write_card
from cai.train.mix import SourceSpec, parse_data, plan, training_data
from cai.train.recipe import load_recipe
from cai.train.registry import get_stage


def _msgs(q, a=None):
    return [{"role": "user", "content": q}] + ([{"role": "assistant", "content": a}] if a else [])


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _sft(path: Path, tag: str, n: int) -> Path:
    return _write(path, [{"messages": _msgs(f"{tag} question {i}?", f"{tag} answer {i}."), "id": f"{tag}{i}"}
                         for i in range(n)])


def _pref(path: Path, tag: str, n: int) -> Path:
    return _write(path, [{"prompt": _msgs(f"{tag} q{i}?"), "chosen": [{"role": "assistant", "content": "good"}],
                          "rejected": [{"role": "assistant", "content": "bad"}]} for i in range(n)])


def _run_folder(path: Path, n: int) -> Path:
    """A run folder of `n` revised generations, not judged."""
    path.mkdir()
    _write(path / "generations.jsonl", [
        {"id": f"g{i}", "prompt": _msgs(f"Run question {i}?"), "category": "x", "sample": 0, "initial": "meh",
         "rounds": [{"principle_id": "p1", "critique": "c", "revision": f"A careful answer {i}."}],
         "final": f"A careful answer {i}.", "meta": {}} for i in range(n)])
    (path / "run.yaml").write_text(yaml.safe_dump({"constitution_name": "default", "constitution_sha256": "abc"}))
    return path


def _build(stage: str, data, tmp_path=None, **overrides):
    recipe = load_recipe(stage, overrides=overrides or None, device="cpu")
    logs: list[str] = []
    ds, info = training_data(get_stage(stage), data, recipe, logs.append)
    return ds, info, recipe, logs


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- parsing --data

def test_only_a_trailing_number_is_a_weight(tmp_path):
    assert parse_data("runs/cai:0.7") == SourceSpec("runs/cai", weight=0.7)
    assert parse_data("helpful.jsonl:3") == SourceSpec("helpful.jsonl", weight=3.0)
    assert parse_data("runs/2024-01-01T12:00/x.jsonl:.5") == SourceSpec("runs/2024-01-01T12:00/x.jsonl", weight=0.5)
    assert parse_data("runs/2024-01-01T12:00") == SourceSpec("runs/2024-01-01T12:00")
    assert parse_data("data.jsonl:rows=500") == SourceSpec("data.jsonl", rows=500)
    odd = _sft(tmp_path / "odd:2", "o", 1)  # a path that exists as written is never split
    assert parse_data(str(odd)) == SourceSpec(str(odd))
    real = _sft(tmp_path / "a.jsonl", "a", 1)
    for bad in (":0", ":-0.3", ":rows=0", ":rows=-2"):
        with pytest.raises(UsageError, match="positive number|whole number"):
            parse_data(f"{real}{bad}")
    with pytest.raises(UsageError, match="weight, a positive number"):
        parse_data(f"{real}:lots")
    assert parse_data("missing.jsonl:0") == SourceSpec("missing.jsonl:0")  # reading it says: no such file


def test_weights_split_the_mix_and_nothing_repeats_by_default():
    sources = [SourceSpec("a", weight=0.7), SourceSpec("b", weight=0.3)]
    takes, why = plan(sources, [70, 1000])
    assert [t.rows for t in takes] == [70, 30] and "a gives all its 70 rows" in why
    takes, _ = plan(sources, [7000, 1000])
    assert [t.rows for t in takes] == [2333, 1000]
    takes, _ = plan(sources, [70, 1000], mix_rows=200)  # a's share asks 140 of its 70 rows: capped
    assert [(t.rows, t.capped, t.asked) for t in takes] == [(70, True, 140), (60, False, None)]
    takes, _ = plan(sources, [70, 1000], mix_rows=200, oversample=True)
    assert [(t.rows, t.repeated) for t in takes] == [(140, True), (60, False)]


# ---------------------------------------------------------------- the training rows

def test_two_sources_by_weight_counts_source_column_and_seed(tmp_path):
    a, b = _sft(tmp_path / "a.jsonl", "a", 70), _sft(tmp_path / "b.jsonl", "b", 100)
    data = [f"{a}:0.7", f"{b}:0.3"]
    ds, info, _, logs = _build("sft", data, seed=1)
    assert Counter(ds["source"]) == {str(a): 70, str(b): 30}
    assert set(ds.column_names) == {"prompt", "completion", "source"}
    assert all(r["prompt"][0]["content"].startswith("a" if r["source"] == str(a) else "b") for r in ds)
    assert [s.share for s in info.sources] == [0.7, 0.3] and info.kind == "mix" and info.seed == 1
    assert any("a mix of 2 sources drawn with seed 1" in line for line in logs)
    # the same seed: the same rows in the same order; another seed: another sample and order
    again, info2, _, _ = _build("sft", data, seed=1)
    assert again.to_list() == ds.to_list() and info2.sha256 == info.sha256
    other, info3, _, _ = _build("sft", data, seed=2)
    assert Counter(other["source"]) == Counter(ds["source"])
    assert {r["prompt"][0]["content"] for r in other if r["source"] == str(b)} != \
           {r["prompt"][0]["content"] for r in ds if r["source"] == str(b)}
    assert other.to_list() != ds.to_list() and info3.sha256 != info.sha256
    # data_seed, when set, is the mix's seed
    by_data_seed, _, _, _ = _build("sft", data, seed=2, data_seed=1)
    assert by_data_seed.to_list() == ds.to_list()


def test_rows_takes_exact_counts_and_more_than_a_source_holds_needs_oversample(tmp_path):
    a, b = _sft(tmp_path / "a.jsonl", "a", 10), _sft(tmp_path / "b.jsonl", "b", 40)
    ds, info, _, _ = _build("sft", [f"{a}:rows=7", f"{b}:rows=25"])
    assert Counter(ds["source"]) == {str(a): 7, str(b): 25}
    assert len({r["prompt"][0]["content"] for r in ds if r["source"] == str(b)}) == 25  # no row twice
    assert [(s.taken, s.available, s.rows) for s in info.sources] == [(7, 10, 7), (25, 40, 25)]
    with pytest.raises(UsageError, match=r"rows: 15 asks for more rows than it holds \(10\).*--oversample"):
        _build("sft", [f"{a}:rows=15", str(b)])
    ds, info, _, _ = _build("sft", [f"{a}:rows=15", str(b)], oversample=True)
    mine = Counter(r["prompt"][0]["content"] for r in ds if r["source"] == str(a))
    assert sum(mine.values()) == 15 and len(mine) == 10 and set(mine.values()) == {1, 2}  # every row once first
    assert info.sources[0].repeated and info.sources[1].taken == 40  # no weight, no rows: all of it


def test_a_capped_share_is_said_in_the_log_and_the_card(tmp_path):
    a, b = _sft(tmp_path / "a.jsonl", "a", 20), _sft(tmp_path / "b.jsonl", "b", 100)
    ds, info, recipe, logs = _build("sft", [f"{a}:0.5", f"{b}:0.5"], mix_rows=60)
    assert Counter(ds["source"]) == {str(a): 20, str(b): 30}
    assert any("asked for 30 rows and it holds 20" in line for line in logs)
    (tmp_path / "m").mkdir()
    card = write_card(tmp_path / "m", stage="sft", model="m", model_dir=Path("m"), data=info, recipe=recipe,
                      metrics={"saved": "merged", "train_rows": len(ds), "data": info.record()},
                      trainer_name="SFTTrainer").read_text()
    assert "20 of 20 (weight 0.5); **capped**: its share asked 30" in card and "**Capped**" in card
    assert info.record()["sources"][0]["capped"] is True


def test_one_source_without_weight_trains_as_before(tmp_path):
    from cai.train import sft

    a = _sft(tmp_path / "a.jsonl", "a", 5)
    ds, info, _, logs = _build("sft", str(a))
    raw = [json.loads(line) for line in a.read_text().splitlines()]
    assert [{k: r[k] for k in ("prompt", "completion")} for r in ds] == sft.rows(raw, "x")  # same rows, same order
    assert set(ds["source"]) == {str(a)} and not logs
    assert (info.path, info.kind, info.sha256, info.rows, info.seed) == (str(a), "file", _sha(a), 5, None)
    assert [(s.name, s.taken, s.share) for s in info.sources] == [(str(a), 5, 1.0)]


def test_a_run_folder_is_hashed_by_the_file_the_stage_reads(tmp_path):
    run = _run_folder(tmp_path / "run", 6)
    b = _sft(tmp_path / "b.jsonl", "b", 6)
    ds, info, _, _ = _build("sft", [f"{run}:0.5", f"{b}:0.5"])
    src = info.sources[0]
    assert (src.kind, Path(src.file).name, src.sha256) == ("run folder", "generations.jsonl",
                                                           _sha(run / "generations.jsonl"))
    assert Counter(ds["source"]) == {str(run): 6, str(b): 6}
    assert info.constitution_sha256 == "abc"  # the run's constitution carries into the mix's card
    # the export's rows, streamed into Arrow, are the rows `cai train` read from the run folder alone
    from cai.export import build_rows, rows_sha256
    from cai.train import sft

    mine = sorted((r for r in ds.to_list() if r.pop("source") == str(run)), key=json.dumps)
    assert mine == sorted(sft.rows(build_rows(run, "sft"), "x"), key=json.dumps)
    alone, alone_info, _, _ = _build("sft", str(run))
    assert (alone_info.kind, alone_info.rows, alone_info.sha256) == ("run folder", 6, rows_sha256(build_rows(run, "sft")))


def test_kto_mixes_labelled_rows_with_preference_rows_split_in_two(tmp_path):
    labelled = _write(tmp_path / "k.jsonl", [{"prompt": _msgs(f"k{i}?"), "completion": [
        {"role": "assistant", "content": "x"}], "label": i % 2 == 0} for i in range(10)])
    pref = _pref(tmp_path / "p.jsonl", "p", 10)  # 20 training rows
    ds, info, _, _ = _build("kto", [f"{labelled}:1", f"{pref}:1"])
    assert Counter(ds["source"]) == {str(labelled): 10, str(pref): 10}
    assert [s.available for s in info.sources] == [10, 20] and set(ds.column_names) == {
        "prompt", "completion", "label", "source"}


def test_rows_are_checked_by_their_number_in_the_source(tmp_path):
    rows = [{"messages": _msgs(f"q{i}?", "a")} for i in range(1500)]
    rows[1234]["messages"] = 7  # past the first batch of the conversion
    bad = _write(tmp_path / "bad.jsonl", rows)
    with pytest.raises(UsageError, match=r"bad.jsonl row 1235: expected a list of \{role, content\} messages"):
        _build("sft", [f"{bad}:1", f"{_sft(tmp_path / 'b.jsonl', 'b', 3)}:1"])
    # a string prompt beside message lists (datasets reads such a column as Json) is normalised like any other
    mixed = _write(tmp_path / "mixed.jsonl", [{"prompt": "plain?", "chosen": "yes", "rejected": "no"},
                                              *_pref_rows_list(3)])
    ds, _, _, _ = _build("dpo", [f"{mixed}:1", f"{_pref(tmp_path / 'p.jsonl', 'p', 4)}:1"])
    assert Counter(ds["source"])[str(mixed)] == 4
    assert {"role": "user", "content": "plain?"} in [r["prompt"][0] for r in ds]
    assert {"role": "assistant", "content": "yes"} in [r["chosen"][0] for r in ds]


def _pref_rows_list(n):
    return [{"prompt": _msgs(f"l{i}?"), "chosen": [{"role": "assistant", "content": "good"}],
             "rejected": [{"role": "assistant", "content": "bad"}]} for i in range(n)]


def test_the_recipe_datasets_list(tmp_path):
    from datasets import Dataset, DatasetDict

    a = _sft(tmp_path / "a.jsonl", "a", 30)
    folder = tmp_path / "ds"
    DatasetDict({"train": Dataset.from_list([{"messages": _msgs(f"t{i}?", "t")} for i in range(5)]),
                 "helpful": Dataset.from_list([{"messages": _msgs(f"h{i}?", "h")} for i in range(40)])}
                ).save_to_disk(str(folder))
    cfg = tmp_path / "mix.yaml"
    cfg.write_text(yaml.safe_dump({"max_steps": 2, "datasets": [
        {"path": str(a), "weight": 0.6}, {"path": str(folder), "weight": 0.4, "split": "helpful", "name": "helpful"}]}))
    recipe = load_recipe("sft", cfg, device="cpu")
    assert recipe.datasets == [{"path": str(a), "weight": 0.6},
                               {"path": str(folder), "weight": 0.4, "split": "helpful", "name": "helpful"}]
    ds, info = training_data(get_stage("sft"), None, recipe, lambda m: None)
    assert Counter(ds["source"]) == {str(a): 30, "helpful": 20}
    assert all(r["prompt"][0]["content"].startswith("h") for r in ds if r["source"] == "helpful")
    assert info.sources[1].split == "helpful" and info.sources[1].kind == "datasets folder"
    assert recipe.as_dict()["datasets"][1]["split"] == "helpful"  # recipe.yaml records the sources
    # rows: N in the recipe; --data replaces the recipe's list
    cfg.write_text(yaml.safe_dump({"datasets": [{"path": str(a), "rows": 4}, {"path": str(folder)}]}))
    ds, _ = training_data(get_stage("sft"), None, load_recipe("sft", cfg, device="cpu"), lambda m: None)
    assert Counter(ds["source"]) == {str(a): 4, str(folder): 5}
    ds, _ = training_data(get_stage("sft"), [str(a)], load_recipe("sft", cfg, device="cpu"), lambda m: None)
    assert len(ds) == 30
    for bad, msg in (([{"path": str(a), "fraction": 0.5}], "did you mean weight"),
                     ([{"path": str(a), "weight": 0.5, "rows": 3}], "a weight or rows, not both"),
                     ([{"path": str(a), "weight": 0.5}, {"path": str(folder)}], "every source a weight or none"),
                     ([{"path": str(a), "weight": -1}], "positive number"),
                     ({"path": str(a)}, "must be a list")):
        cfg.write_text(yaml.safe_dump({"datasets": bad}))
        with pytest.raises(UsageError, match=msg):
            load_recipe("sft", cfg, device="cpu")


def test_the_card_and_metrics_list_every_source(tmp_path):
    a, b = _sft(tmp_path / "a.jsonl", "a", 70), _sft(tmp_path / "b.jsonl", "b", 100)
    ds, info, recipe, _ = _build("sft", [f"{a}:0.7", f"{b}:0.3"])
    metrics = {"saved": "merged", "train_rows": len(ds), "data": info.record()}
    (tmp_path / "m").mkdir()
    card = write_card(tmp_path / "m", stage="sft", model="m", model_dir=Path("m"), data=info, recipe=recipe,
                      metrics=metrics, trainer_name="SFTTrainer").read_text()
    assert "## Data sources" in card and "| source | kind | sha256 | rows taken | share |" in card
    assert f"| `{a}` | file | `{_sha(a)}` | 70 of 70 (weight 0.7) | 70.0% |" in card
    assert f"| `{b}` | file | `{_sha(b)}` | 30 of 100 (weight 0.3) | 30.0% |" in card
    assert "| data |" not in card.split("## Final metrics")[1]  # the sources table, not a dict in the metrics
    assert "datasets:" in card  # the recipe section names the sources
    record = metrics["data"]
    assert [(s["name"], s["sha256"], s["taken"], s["share"]) for s in record["sources"]] == [
        (str(a), _sha(a), 70, 0.7), (str(b), _sha(b), 30, 0.3)]
    assert record["rows"] == 100 and record["seed"] == info.seed


# ---------------------------------------------------------------- refused through the CLI, before any model loads

@pytest.fixture
def no_training(monkeypatch):
    """Every stage's trainer build (and the model lookup) fails if reached."""
    def boom(*a, **k):
        raise AssertionError("reached the model")

    for name, spec in list(registry.STAGES.items()):
        monkeypatch.setitem(registry.STAGES, name, dataclasses.replace(spec, build=boom))
    monkeypatch.setattr("cai.models.resolve", boom)


def _cli(*args):
    return CliRunner().invoke(main, ["train", *args, "--device", "cpu"])


def test_a_wrong_kind_of_source_exits_2_naming_it(tmp_path, no_training):
    sft, pref = _sft(tmp_path / "helpful.jsonl", "h", 4), _pref(tmp_path / "pairs.jsonl", "p", 4)
    out = str(tmp_path / "o")
    res = _cli("dpo", "--data", f"{pref}:0.5", "--data", f"{sft}:0.5", "--out", out)
    assert res.exit_code == 2, res.output
    assert f"--data {sft}: SFT rows" in res.output and "lack prompt, chosen, rejected" in res.output
    res = _cli("sft", "--data", f"{sft}:0.5", "--data", f"{pref}:0.5", "--out", out)
    assert res.exit_code == 2 and f"--data {pref}: preference rows" in res.output and "lack messages" in res.output
    run = _run_folder(tmp_path / "run", 3)  # generated, not judged
    res = _cli("dpo", "--data", f"{run}:0.5", "--data", f"{pref}:0.5", "--out", out)
    assert res.exit_code == 2 and f"--data {run}: a run folder not judged yet lacks preferences.jsonl" in res.output
    for data, msg in (([f"{sft}:0"], "positive number"), ([f"{sft}:0.5", str(pref)], "every source a weight or none"),
                      ([], "--data is required"), ([str(tmp_path / "nope.jsonl")], "no such file")):
        res = _cli("sft", *[x for d in data for x in ("--data", d)], "--out", out)
        assert res.exit_code == 2 and msg in res.output, (data, res.output)
    res = _cli("reward", "--data", f"{pref}:0.5", "--data", f"{_pref(tmp_path / 'more.jsonl', 'm', 2)}:0.5",
               "--out", out)
    assert res.exit_code == 2 and "mixing sources is for sft, dpo and kto" in res.output
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- real training (slow)

@pytest.mark.slow
def test_sft_trains_on_a_run_folder_mixed_with_a_jsonl(tmp_path):
    run = _run_folder(tmp_path / "run", 6)
    helpful = _sft(tmp_path / "helpful.jsonl", "helpful", 12)
    out = tmp_path / "model"
    res = CliRunner().invoke(main, ["train", "sft", "--data", f"{run}:0.5", "--data", f"{helpful}:0.5",
                                    "--out", str(out), "--max-steps", "2", "--batch-size", "2", "--max-length", "128",
                                    "--device", "cpu", "--seed", "3"])
    assert res.exit_code == 0, res.output
    card = (out / "README.md").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["train_rows"] == 12
    run_sha = _sha(run / "generations.jsonl")
    assert f"| `{run}` | run folder (`generations.jsonl`) | `{run_sha}` | 6 of 6 (weight 0.5) | 50.0% |" in card
    assert f"| `{helpful}` | file | `{_sha(helpful)}` | 6 of 12 (weight 0.5) | 50.0% |" in card
    assert [(s["name"], s["taken"]) for s in metrics["data"]["sources"]] == [(str(run), 6), (str(helpful), 6)]
    assert yaml.safe_load((out / "recipe.yaml").read_text())["datasets"] == [
        {"path": str(run), "weight": 0.5}, {"path": str(helpful), "weight": 0.5}]
    print(card.split("## Data sources")[1].split("## Final metrics")[0])
