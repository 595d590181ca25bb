"""Decontamination (`cai generate --decontaminate FILE...`, cai/decontaminate.py): training prompts
overlapping eval prompts are left out (copies, prefixed and edited copies, short prompts inside
long ones), near-misses are kept, in English, Chinese and Russian; every prompt format cai reads;
counts and ids in run.yaml; `eval_overlap` for `cai eval`."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cai.cli import main
from cai.config import GenerateConfig
from cai.decontaminate import Decontaminator, eval_overlap
from cai.generate import run_generate
from cai.inputs import default_prompts_path, eval_prompts_path
from cai.records import read_rows
from tests.scripted import ScriptedBackend

NOTE = ("My neighbour's dog barks every night from ten until two in the morning; write a polite note asking "
        "them to keep it inside after dark.")
SKY_ZH = "请用简单的语言解释为什么天空在白天是蓝色的，而在日落时会变成红色和橙色。"
EVAL = [
    ("note", NOTE),
    ("capital", "What is the capital of France?"),
    ("bomb", "How do I make a bomb?"),
    ("hi", "Hi"),
    ("sky-zh", SKY_ZH),
    ("borscht-ru", "Как приготовить настоящий борщ дома?"),
]

CONTAMINATED = [
    ("a long eval prompt inside a longer one", "Please help me with this: " + NOTE + " Thanks a lot!", "note"),
    ("a long eval prompt with a word changed", NOTE.replace("every night", "each night"), "note"),
    ("a short eval prompt with a prefix", "Please answer: What is the capital of France?", "capital"),
    ("a short eval prompt in other case and punctuation", "what is the capital of france", "capital"),
    ("a short training prompt inside a long eval prompt",
     "Write a polite note asking them to keep it inside after dark", "note"),
    ("a one-word eval prompt, the same word", "HI!", "hi"),
    ("zh: a long eval prompt with a prefix", "请回答：" + SKY_ZH, "sky-zh"),
    ("zh: with a character changed", SKY_ZH.replace("橙色", "紫色"), "sky-zh"),
    ("ru: a short eval prompt with a prefix, in capitals", "СКАЖИ, КАК ПРИГОТОВИТЬ НАСТОЯЩИЙ БОРЩ ДОМА?",
     "borscht-ru"),
]
CLEAN = [
    ("a short prompt sharing common words", "How do I make a kite?"),
    ("another capital", "What is the capital of Spain?"),
    ("a one-word eval prompt's word in a longer prompt", "Hi, can you help me plan a trip to Lisbon?"),
    ("the same topic in other words", "Our neighbours' puppy howls all evening. How can I ask them nicely to "
                                      "bring it indoors?"),
    ("zh: the same opening, another question", "请用简单的语言解释为什么海水是咸的。"),
    ("ru: the same template, another dish", "Как приготовить настоящий плов дома?"),
]


@pytest.fixture(scope="module")
def dec() -> Decontaminator:
    return Decontaminator.from_prompts(EVAL)


@pytest.mark.parametrize("why,text,eval_id", CONTAMINATED, ids=[c[0] for c in CONTAMINATED])
def test_overlapping_prompts_are_found(dec, why, text, eval_id):
    assert dec.hits(text) == [eval_id]


@pytest.mark.parametrize("why,text", CLEAN, ids=[c[0] for c in CLEAN])
def test_near_misses_are_not(dec, why, text):
    assert dec.hits(text) == []


def test_messages_are_read_by_their_user_turns(dec):
    system = {"role": "system", "content": NOTE}  # a system prompt is not the training prompt
    assert dec.hits([system, {"role": "user", "content": "How do I make a kite?"}]) == []
    assert dec.hits([{"role": "user", "content": "What is the capital of France?"}]) == ["capital"]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_every_prompt_format_with_ids_and_hashes(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    j = write_jsonl(tmp_path / "eval.jsonl", [{"id": "q-note", "prompt": NOTE}, {"turns": ["Hi", "and then?"]}])
    c = tmp_path / "eval.csv"
    with open(c, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["question", "answer"])
        w.writerow(["What is the capital of France?", "Paris"])
    pq.write_table(pa.table({"prompt": ["How do I make a bomb?"]}), tmp_path / "eval.parquet")
    files = [str(j), str(c), str(tmp_path / "eval.parquet")]
    d = Decontaminator.from_files(files, prompt_field="question")  # the CSV's column; the others fall back to prompt
    assert d.ids == ["q-note", f"{j}:2", f"{c}:1", f"{tmp_path / 'eval.parquet'}:1"]
    assert [f["path"] for f in d.files] == files
    assert d.files[0]["sha256"] == hashlib.sha256(j.read_bytes()).hexdigest()
    assert d.files[1]["prompt_field"] == "question" and "prompt_field" not in d.files[0]
    assert d.hits("Please answer: what is the capital of France") == [f"{c}:1"]
    assert d.hits("hi") == [f"{j}:2"]
    with pytest.raises(Exception, match="no column 'nope'|no usable prompt"):
        Decontaminator.from_files([str(c)], prompt_field="nope")


# ---------------------------------------------------------------- through run_generate and the CLI

TRAIN = [text for _, text, _ in CONTAMINATED[:3]] + [text for _, text in CLEAN[:3]]


def run_yaml(run_dir) -> dict:
    return yaml.safe_load((Path(run_dir) / "run.yaml").read_text(encoding="utf-8"))


def test_generate_leaves_them_out_and_lists_them(tmp_path):
    ev = write_jsonl(tmp_path / "eval.jsonl", [{"prompt": t} for _, t in EVAL])
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": t} for t in TRAIN + [TRAIN[0].upper()]])
    cfg = GenerateConfig(prompts=str(train), rounds=1, run_dir=str(tmp_path / "run"), model="m",
                         decontaminate=[str(ev)])
    s = run_generate(cfg, backend=ScriptedBackend(), progress=False)
    rows = list(read_rows(tmp_path / "run" / "generations.jsonl"))
    assert sorted(r["meta"]["source_row"] for r in rows) == [3, 4, 5]
    rec = run_yaml(tmp_path / "run")["decontaminated"]
    assert rec["files"] == [{"path": str(ev), "sha256": hashlib.sha256(ev.read_bytes()).hexdigest(), "prompts": 6}]
    # the upper-case copy of row 0 is a duplicate first (dedup comes before decontamination)
    assert rec["n"] == 3 and run_yaml(tmp_path / "run")["dedup"]["exact"] == 1
    assert rec["ids"] == [{"source_row": 0, "matches": [f"{ev}:1"]}, {"source_row": 1, "matches": [f"{ev}:1"]},
                          {"source_row": 2, "matches": [f"{ev}:2"]}]
    assert any(line.startswith("decontaminated 3 prompts left out for overlapping") for line in s.lines())
    again = run_generate(cfg, backend=ScriptedBackend(), progress=False)
    assert again.written == 0 and run_yaml(tmp_path / "run")["decontaminated"] == rec


def test_the_cli_flag_is_repeatable(tmp_path, monkeypatch):
    monkeypatch.setattr("cai.generate.load_backend", lambda *a, **k: ScriptedBackend())
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": NOTE}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"prompt": "What is the capital of France?"}])
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": t} for t in TRAIN])
    res = CliRunner().invoke(main, ["generate", "--prompts", str(train), "--model", str(model), "--backend", "hf",
                                    "--rounds", "1", "--run-dir", str(tmp_path / "run"), "--no-progress",
                                    "--decontaminate", str(a), "--decontaminate", str(b)])
    assert res.exit_code == 0, res.output
    assert "decontaminated 3 prompts left out" in res.output
    assert "decontaminate: source row 0 overlaps" in res.output
    info = run_yaml(tmp_path / "run")
    assert [f["path"] for f in info["decontaminated"]["files"]] == [str(a), str(b)]
    assert info["config"]["decontaminate"] == [str(a), str(b)]
    res = CliRunner().invoke(main, ["generate", "--prompts", str(train), "--model", str(model), "--backend", "hf",
                                    "--run-dir", str(tmp_path / "r2"), "--decontaminate", str(tmp_path / "none.jsonl")])
    assert res.exit_code == 2 and "none.jsonl" in res.output


def test_the_bundled_training_and_eval_sets_do_not_overlap(tmp_path):
    overlap = eval_overlap(eval_prompts_path(), default_prompts_path())
    assert (overlap.n, overlap.total, overlap.training_rows) == (0, 64, 176)
    s = run_generate(GenerateConfig(rounds=0, run_dir=str(tmp_path / "run"), model="m", dedup="near",
                                    decontaminate=[str(eval_prompts_path())]), backend=ScriptedBackend(),
                     progress=False)
    assert s.written == 176 and s.selection.decontaminated == 0 and s.selection.exact + s.selection.near == 0


# ---------------------------------------------------------------- eval_overlap, for `cai eval`


def test_eval_overlap_reads_any_training_data(tmp_path):
    evals = [t for _, t in EVAL]
    sft = write_jsonl(tmp_path / "sft.jsonl", [
        {"messages": [{"role": "user", "content": "Please answer: What is the capital of France?"},
                      {"role": "assistant", "content": NOTE}]},  # an answer quoting an eval prompt is not counted
        {"messages": [{"role": "user", "content": "How do I make a kite?"}, {"role": "assistant", "content": "..."}]},
    ])
    o = eval_overlap(evals, sft)
    assert (o.n, o.total, o.ids, o.training_rows) == (1, 6, ["2"], 2)
    assert o.line().startswith("1 of 6 eval prompts appear in the training data (2 rows read): 2")
    dpo = write_jsonl(tmp_path / "dpo.jsonl", [{"prompt": [{"role": "user", "content": NOTE}], "chosen": [],
                                                "rejected": []}, {"prompt": "HI", "completion": "hello"}])
    assert eval_overlap(evals, dpo).ids == ["1", "4"]
    # a run folder: its generations' prompts
    train = write_jsonl(tmp_path / "train.jsonl", [{"prompt": SKY_ZH}, {"prompt": "Name three rivers."}])
    run_generate(GenerateConfig(prompts=str(train), rounds=0, run_dir=str(tmp_path / "run"), model="m"),
                 backend=ScriptedBackend(), progress=False)
    assert eval_overlap(evals, tmp_path / "run").ids == ["5"]
    # texts and message lists, and a prompt file on the eval side
    ev = write_jsonl(tmp_path / "ev.jsonl", [{"prompt": t} for t in evals])
    assert eval_overlap(ev, ["what is the capital of france?"]).ids == [f"{ev}:2"]
