"""What `cai view`'s labelling mode needs from the loader (no browser): each pair's two answers
on the page, and a key per run folder for the marks kept in the browser.
tests/test_view_label_browser.py marks pairs in Chromium and scores the file they make."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cai.config import GenerateConfig
from cai.constitution import load_constitution
from cai.generate import run_generate
from cai.judge import Judge
from cai.pairs import judge_run
from cai.view import load
from tests.scripted import ScriptedBackend
from tests.view_fixtures import make_run


def test_samples_pairs_carry_the_answer_a_row_does_not(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"q{i}"}) + "\n" for i in range(3)))
    run = tmp_path / "samples"
    run_generate(GenerateConfig(prompts=str(p), rounds=0, samples=3, run_dir=str(run), model="m"),
                 backend=ScriptedBackend(), progress=False)
    judge_run(run, Judge(ScriptedBackend(prefer="answer 2"), load_constitution("default")), "samples",
              progress=False)
    pairs = {r["id"]: r for r in map(json.loads, (run / "preferences.jsonl").read_text().splitlines())}
    data = load.load_run(run)
    for row in data["rows"]:
        v = row["verdict"]
        pair = pairs[v["pair_id"]]
        final = row.get("final", row["initial"])  # no rounds: the final answer is the initial one
        expected = {"chosen": {"rejected": pair["rejected"]}, "rejected": {"chosen": pair["chosen"]},
                    "compared": {"chosen": pair["chosen"], "rejected": pair["rejected"]}}[v["role"]]
        assert v["answers"] == expected
        # with the row's own answer, the page has both of the pair's answers on every row
        both = {**v["answers"], **({v["role"]: final} if v["role"] != "compared" else {})}
        assert both == {"chosen": pair["chosen"], "rejected": pair["rejected"]}
    # a revision pair's answers are the row's own initial and final: nothing repeated
    make_run(tmp_path / "rev", 6)
    assert all("answers" not in r["verdict"] for r in load.load_run(tmp_path / "rev")["rows"] if r["verdict"])


def test_marks_are_kept_per_run_folder(tmp_path, monkeypatch):
    make_run(tmp_path / "one", 3)
    make_run(tmp_path / "two", 3)
    key = load.load_run(tmp_path / "one")["label_key"]
    monkeypatch.chdir(tmp_path)
    # the same folder however it is named on the command line; another folder another key
    assert load.load_run(tmp_path / "one" / ".." / "one")["label_key"] == key == load.label_key(tmp_path / "one")
    assert load.load_run(Path("one"))["label_key"] == key
    assert load.load_run(tmp_path / "two")["label_key"] != key
    assert len(key) == 16 and str(tmp_path) not in key and os.sep not in key
