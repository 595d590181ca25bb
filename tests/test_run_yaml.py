"""A damaged run.yaml (hand-edited, cut short, a tab, an unclosed bracket, not a mapping) is an
input error: exit 2 and a message naming the file, the line and column and what is wrong, with a
hint, before any engine starts; never a bare YAML traceback with exit 1."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from cai.cli import main
from cai.config import GenerateConfig
from cai.errors import UsageError
from cai.generate import run_generate
from cai.records import RunFolder
from tests.scripted import ScriptedBackend

HINT = "cai's record of this run"


@pytest.fixture
def run(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"Question {i}?"}) + "\n" for i in range(3)))
    run = tmp_path / "run"
    run_generate(GenerateConfig(prompts=str(p), rounds=1, run_dir=str(run), model="m"), backend=ScriptedBackend(),
                 progress=False)
    return run


@pytest.fixture
def no_engine(monkeypatch):
    import cai.backends as backends

    def refuse(*a, **k):
        raise AssertionError("a damaged run.yaml is refused before any engine starts")

    monkeypatch.setattr(backends, "load_backend", refuse)


def _damage(run, how: str) -> str:
    """Damage run.yaml; returns the line (1-based) the message should name."""
    f = run / "run.yaml"
    text = f.read_text()
    lines = text.splitlines(keepends=True)
    if how == "unclosed":  # `key: [unclosed` as the second line
        f.write_text(lines[0] + "key: [unclosed\n" + "".join(lines[1:]))
        return "line 3, column"  # the parser finds the missing `]` on the next line
    if how == "tab":  # an indentation made with a tab
        n = next(i for i, line in enumerate(lines) if line.startswith("  "))
        lines[n] = "\t" + lines[n][2:]
        f.write_text("".join(lines))
        return f"line {n + 1}, column 1"
    if how == "torn":  # cut short inside a quoted value
        n = next(i for i, line in enumerate(lines) if line.startswith("created:"))
        f.write_text("".join(lines[:n]) + 'created: "2026-')
        return f"line {n + 1}, column"
    if how == "list":
        f.write_text("- stage: generate\n- model: m\n")
        return "line 1"
    if how == "section":  # a section that should be a mapping
        f.write_text(text.replace("config:\n", "config: 3\nold_config:\n", 1))
        n = next(i for i, line in enumerate(f.read_text().splitlines()) if line.startswith("config: 3"))
        return f"line {n + 1}"
    raise ValueError(how)


def _assert_names_the_place(res, run, where: str) -> None:
    out = res.output
    assert res.exit_code == 2, out
    assert str(run / "run.yaml") in out and where in out, out
    assert HINT in out and "restore" in out, out
    assert "Traceback" not in out and "ParserError" not in out and "<unicode string>" not in out, out


@pytest.mark.parametrize("how", ["unclosed", "tab", "torn", "list", "section"])
def test_judge_refuses_a_damaged_run_yaml_with_its_place(run, no_engine, how):
    where = _damage(run, how)
    res = CliRunner().invoke(main, ["judge", str(run), "--calibration", "none", "--no-progress"])
    _assert_names_the_place(res, run, where)
    assert not (run / "preferences.jsonl").exists()


@pytest.mark.parametrize("how", ["unclosed", "tab", "torn", "list"])
def test_export_refuses_a_damaged_run_yaml_with_its_place(run, tmp_path, how):
    where = _damage(run, how)
    out = tmp_path / "sft.jsonl"
    res = CliRunner().invoke(main, ["export", str(run), "--format", "sft", "--out", str(out)])
    _assert_names_the_place(res, run, where)
    assert not out.exists()


def test_generate_resume_refuses_a_damaged_run_yaml(run, tmp_path, monkeypatch):
    """A rerun of generate reads run.yaml to resume: it says where the file is broken too, and does
    not overwrite it (the user's record of the run stays for them to fix)."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    monkeypatch.setattr("cai.generate.load_backend", lambda *a, **k: ScriptedBackend())
    _damage(run, "unclosed")
    before = (run / "run.yaml").read_bytes()
    res = CliRunner().invoke(main, ["generate", "--prompts", str(tmp_path / "p.jsonl"), "--run-dir", str(run),
                                    "--rounds", "1", "--model", str(model), "--backend", "hf", "--no-progress"])
    _assert_names_the_place(res, run, "line 3, column")
    assert (run / "run.yaml").read_bytes() == before


def test_generate_force_new_starts_over_a_damaged_run_yaml(run, tmp_path):
    _damage(run, "tab")
    s = run_generate(GenerateConfig(prompts=str(tmp_path / "p.jsonl"), rounds=1, run_dir=str(run), model="m",
                                    force_new=True), backend=ScriptedBackend(), progress=False)
    assert s.written == 3 and RunFolder(run).info()["stage"] == "generate"


def test_the_message_says_what_is_wrong(run):
    _damage(run, "unclosed")
    with pytest.raises(UsageError) as err:
        RunFolder(run).info()
    msg = str(err.value)
    assert re.search(r"run\.yaml: line 3, column \d+: not valid YAML: expected ',' or '\]'", msg), msg
    assert "flow sequence begun at line 2, column 6" in msg and "\n" not in msg


def test_tab_and_bytes_and_empty(run):
    _damage(run, "tab")
    with pytest.raises(UsageError, match=r"found character '\\t' that cannot start any token.*the line reads '\\t"):
        RunFolder(run).info()
    (run / "run.yaml").write_bytes(b"stage: generate\nmodel: \xff\n")
    with pytest.raises(UsageError, match=r"run\.yaml: not UTF-8 text \(byte 0xff at offset 23\)\. run\.yaml is cai's"):
        RunFolder(run).info()
    (run / "run.yaml").write_text("# nothing but a comment\n")
    with pytest.raises(UsageError, match=r"run\.yaml: the file holds nothing .*not a mapping of the run's settings"):
        RunFolder(run).info()


def test_an_intact_run_yaml_still_reads(run):
    info = RunFolder(run).info()
    assert info["stage"] == "generate" and isinstance(info["config"], dict)
    assert RunFolder(run / "nowhere").info() == {}


def test_a_damaged_recipe_names_its_line(tmp_path):
    from cai.textfiles import read_recipe_file

    f = tmp_path / "r.yaml"
    f.write_text("lr: 1e-5\nsteps: [10\n")
    with pytest.raises(UsageError, match=r"r\.yaml: line 3, column 1: not valid YAML: expected ',' or '\]'"):
        read_recipe_file(f)
    f.write_text("- lr\n")
    with pytest.raises(UsageError, match=r"r\.yaml: line 1: the file holds a list at the top, not a mapping"):
        read_recipe_file(f)


def test_cai_view_of_a_damaged_run_yaml_names_the_file_and_line(tmp_path):
    from click.testing import CliRunner

    from cai.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "generations.jsonl").write_text("")
    (run / "run.yaml").write_text("model: m\nconfig: [unclosed\n")
    res = CliRunner().invoke(main, ["view", str(run)])
    assert res.exit_code == 2 and "run.yaml: line" in res.output, res.output
