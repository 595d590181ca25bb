"""Hostile or broken files fail fast with exit 2 and the place: YAML alias bombs, bytes that are not
UTF-8, prompt sets with nothing usable."""

from __future__ import annotations

import json
import time

import pytest
from click.testing import CliRunner

from cai.cli import main


def alias_bomb() -> str:
    """Nine levels of nine-fold aliases: a few hundred bytes, 9**9 nodes once expanded."""
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\nname: bomb\n"


NOT_UTF8 = {
    "random bytes": b"\xff\xfe\x00garbage\x80\x81",
    "utf-16 with a byte-order mark": "name: x\n".encode("utf-16"),
}


def run(args, timeout_s: float = 20):
    t0 = time.monotonic()
    res = CliRunner().invoke(main, args)
    assert time.monotonic() - t0 < timeout_s, "took far too long: the file was expanded"
    return res


def test_alias_bomb_constitution_is_refused_at_once(tmp_path):
    f = tmp_path / "bomb.yaml"
    f.write_text(alias_bomb())
    res = run(["constitution", "validate", str(f)])
    assert res.exit_code == 2 and f"{f}:2" in res.output and "aliases" in res.output
    res = run(["generate", "--constitution", str(f), "--run-dir", str(tmp_path / "run")])
    assert res.exit_code == 2 and "aliases" in res.output and not (tmp_path / "run").exists()


def test_alias_bomb_recipes_are_refused(tmp_path):
    f = tmp_path / "recipe.yaml"
    f.write_text(alias_bomb())
    res = run(["generate", "--config", str(f), "--run-dir", str(tmp_path / "run")])
    assert res.exit_code == 2 and f"{f}:2: yaml: aliases" in res.output
    res = run(["train", "sft", "--data", str(tmp_path), "--out", str(tmp_path / "m"), "--config", str(f)])
    assert res.exit_code == 2 and "aliases" in res.output


@pytest.mark.parametrize("kind", sorted(NOT_UTF8))
def test_files_that_are_not_utf8_exit_2_with_the_offset(tmp_path, kind):
    data = NOT_UTF8[kind]
    con = tmp_path / "c.yaml"
    con.write_bytes(data)
    res = run(["constitution", "validate", str(con)])
    assert res.exit_code == 2 and f"{con}: not UTF-8 text (byte 0x" in res.output and "at offset" in res.output
    assert "UnicodeDecodeError" not in res.output
    rec = tmp_path / "r.yaml"
    rec.write_bytes(data)
    res = run(["generate", "--config", str(rec), "--run-dir", str(tmp_path / "run")])
    assert res.exit_code == 2 and "not UTF-8 text" in res.output
    res = run(["train", "sft", "--data", str(tmp_path), "--out", str(tmp_path / "m"), "--config", str(rec)])
    assert res.exit_code == 2 and "not UTF-8 text" in res.output
    tpl = tmp_path / "tpl"
    tpl.mkdir()
    (tpl / "critique.j2").write_bytes(data)
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"prompt": "hi"}) + "\n")
    res = run(["generate", "--prompts", str(p), "--templates", str(tpl), "--run-dir", str(tmp_path / "run")])
    assert res.exit_code == 2 and "critique.j2: not UTF-8 text" in res.output
    prompts = tmp_path / "bad.txt"
    prompts.write_bytes(data)
    res = run(["generate", "--prompts", str(prompts), "--run-dir", str(tmp_path / "run")])
    assert res.exit_code == 2 and "not UTF-8" in res.output and not (tmp_path / "run").exists()


def test_constitution_byte_offset_is_exact(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_bytes(b"name: ok\ndescription: caf\xe9\n")
    res = run(["constitution", "validate", str(f)])
    assert res.exit_code == 2 and "byte 0xe9 at offset 25" in res.output


@pytest.mark.parametrize("content", ["", "\n\n", '{"text": 1}\n{"prompt": ""}\n'])
def test_an_empty_prompt_set_is_a_usage_error(tmp_path, content):
    p = tmp_path / "empty.jsonl"
    p.write_text(content)
    res = run(["generate", "--prompts", str(p), "--on-bad-row", "skip", "--run-dir", str(tmp_path / "run")])
    assert res.exit_code == 2 and "no usable prompt" in res.output
    assert not (tmp_path / "run").exists()


def test_a_full_disk_exits_1_with_one_line_and_the_rerun_resumes(tmp_path, monkeypatch):
    import errno

    import cai.records as records
    from cai.records import read_rows
    from tests.scripted import ScriptedBackend

    class FillsUp:
        """The run folder's file, on a disk with room for two rows and half of a third."""

        def __init__(self, fh):
            self.fh, self.rows = fh, 0

        def write(self, text):
            self.rows += 1
            if self.rows == 3:
                self.fh.write(text[: len(text) // 2])
                self.fh.flush()
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.fh.write(text)

        def __getattr__(self, name):
            return getattr(self.fh, name)

    real_init = records.AppendWriter.__init__

    def init(self, path):
        real_init(self, path)
        if path.name == "generations.jsonl":
            self._fh = FillsUp(self._fh)

    monkeypatch.setattr("cai.generate.load_backend", lambda *a, **k: ScriptedBackend())
    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"question {i}"}) + "\n" for i in range(6)))
    args = ["generate", "--prompts", str(p), "--rounds", "1", "--chunk-size", "1", "--run-dir", str(tmp_path / "run"),
            "--backend", "hf", "--no-progress"]
    monkeypatch.setattr(records.AppendWriter, "__init__", init)
    monkeypatch.setattr("cai.generate.check_engine", lambda *a, **k: ("hf", None))
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1, res.output
    (line,) = [x for x in res.output.splitlines() if x.startswith("Error")]
    assert "the disk is full" in line and str(tmp_path / "run") in line and "rerun the same command" in line
    assert len(list(read_rows(tmp_path / "run" / "generations.jsonl"))) == 2  # whole rows only
    monkeypatch.setattr(records.AppendWriter, "__init__", real_init)
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    rows = list(read_rows(tmp_path / "run" / "generations.jsonl"))
    assert len(rows) == 6 == len({r["id"] for r in rows}) and "repaired" in res.output


# ---------------------------------------------------------------- prompts longer than the context

from tests.scripted import ScriptedBackend  # noqa: E402


class Windowed(ScriptedBackend):
    """A scripted engine with a context: a conversation costs one token per word, plus `per_message`."""

    def __init__(self, window: int, per_message: int = 0, **kw):
        super().__init__(**kw)
        self.context_window, self.per_message, self.seen = window, per_message, []

    def count_tokens(self, conv, prefix=None):
        return sum(len(m["content"].split()) + self.per_message for m in conv) + len((prefix or "").split())

    def chat(self, conversations, params):
        for c in conversations:
            assert self.count_tokens(c) + params.max_tokens <= self.context_window, "an over-long request was sent"
        return super().chat(conversations, params)


def long_prompts(path, n_ok: int = 4, long_words: int = 5000):
    rows = [{"prompt": f"short question {i}"} for i in range(n_ok)]
    rows.insert(2, {"prompt": "word " * long_words})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_an_over_long_prompt_is_a_bad_row_not_the_end_of_the_run(tmp_path):
    from cai.config import GenerateConfig
    from cai.generate import run_generate
    from cai.records import read_rows

    p = long_prompts(tmp_path / "p.jsonl")
    cfg = GenerateConfig(prompts=str(p), rounds=1, run_dir=str(tmp_path / "run"), model="m", few_shot=0,
                         on_bad_row="skip")
    s = run_generate(cfg, backend=Windowed(1000), progress=False)
    assert s.written == 4 and s.too_long == 1 and s.failed == 0
    assert any(line.startswith("too long       1") for line in s.lines())
    assert len(list(read_rows(tmp_path / "run" / "generations.jsonl"))) == 4
    from cai.errors import UsageError

    with pytest.raises(UsageError, match=r"row 3: prompt: 5000 tokens with the few-shot prefix, plus 200 for the answer, do not fit .* 1000"):
        run_generate(cfg.model_copy(update={"on_bad_row": "fail", "run_dir": str(tmp_path / "r2")}),
                     backend=Windowed(1000), progress=False)


def test_a_conversation_that_outgrows_the_context_ends_its_rounds(tmp_path):
    from cai.config import GenerateConfig
    from cai.generate import run_generate
    from cai.records import read_rows

    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"prompt": "hi"}) + "\n")
    # 100 tokens a message: the answer (1 message) and the critique (3) fit 450, the revision (5) does not
    cfg = GenerateConfig(prompts=str(p), rounds=2, run_dir=str(tmp_path / "run"), model="m", few_shot=0,
                         answer={"max_tokens": 40}, critique={"max_tokens": 40}, revision={"max_tokens": 40})
    s = run_generate(cfg, backend=Windowed(450, per_message=100), progress=False)
    (row,) = read_rows(tmp_path / "run" / "generations.jsonl")
    assert s.written == 1 and s.rounds_stopped == 1 and row["rounds"] == []
    assert row["meta"]["rounds_stopped"].startswith("round 1 revision:") and "context of 450" in row["meta"]["rounds_stopped"]


def test_a_pair_too_long_for_the_judge_is_a_tie_with_a_reason(tmp_path):
    from cai.constitution import load_constitution
    from cai.judge import Judge
    from cai.pairs import judge_pairs_file
    from cai.records import read_rows

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"id": "long", "prompt": "q", "response_a": "GOOD " * 3000, "response_b": "no"}) + "\n"
                     + json.dumps({"id": "short", "prompt": "q", "response_a": "GOOD", "response_b": "no"}) + "\n")
    s = judge_pairs_file(pairs, tmp_path / "o.jsonl", Judge(Windowed(1000), load_constitution("default")),
                         progress=False)
    rows = {r["id"]: r for r in read_rows(tmp_path / "o.jsonl")}
    assert rows["long"]["winner"] == "tie" and "too long for the judge" in rows["long"]["reason"]
    assert rows["short"]["winner"] == "a" and "reason" not in rows["short"]
    assert s.too_long == 1 and s.position_consistency == 1.0  # the unasked pair says nothing about bias


def test_eval_leaves_out_prompts_too_long_for_a_model(tmp_path, monkeypatch):
    from tests.test_evaluate import FakeModel

    class WindowedFake(FakeModel):
        context_window = 400

        def count_tokens(self, conv, prefix=None):
            return sum(len(m["content"].split()) for m in conv)

    monkeypatch.setattr("cai.evaluate.load_backend", lambda name, model, **o: WindowedFake(model))
    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps({"prompt": t, "category": "helpful"}) + "\n" for t in ["SAFE 1", "x " * 500, "SAFE 2"]))
    args = ["eval", "--model", "model-a", "--baseline", "model-b", "--prompts", str(p), "--no-progress",
            "--calibration", "none", "--refusal-calibration", "none"]
    res = CliRunner().invoke(main, args + ["--out", str(tmp_path / "e"), "--on-bad-row", "skip"])
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert m["n"] == 2 and m["too_long"] == 1
    res = CliRunner().invoke(main, args + ["--out", str(tmp_path / "f")])
    assert res.exit_code == 2 and "row 2: prompt: 500 prompt tokens" in res.output


def test_a_second_process_on_the_same_run_folder_is_refused(tmp_path):
    from cai.records import RunFolder

    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps({"prompt": "hi"}) + "\n")
    lock = RunFolder(tmp_path / "run").lock()  # as another cai process holds it
    try:
        res = run(["generate", "--prompts", str(p), "--run-dir", str(tmp_path / "run"), "--backend", "hf"])
    finally:
        lock.release()
    assert res.exit_code == 2 and "in use by another cai process" in res.output
