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
