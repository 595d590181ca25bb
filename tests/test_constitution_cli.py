"""`cai constitution ...` through click's CliRunner on real files."""

from __future__ import annotations

import difflib
import json
import multiprocessing
import re
import shutil
import sys
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cai.cli import main
from cai.constitution import load_constitution, validate_file
from cai.resources import bundled_file

# Comments, quoting and blank lines everywhere, so that a careless rewrite would show in the diff.
COMMENTED = """\
# Top comment: keep me.
name: commented
version: "2.3"   # bumped by every change
description: >-
  A file that exercises comments,
  quoting and spacing.

principles:
  # --- first group

  # about alpha
  - id: alpha
    critique: 'Point out anything unsafe in your last response.'   # single quotes
    revision: "Rewrite your last response to make it safe."
    weight: 2
    tags: [harm]

  - id: beta
    critique: Point out where your last response refused without a reason.
    revision: |-
      Rewrite your last response
      so it helps.
    # a note inside beta
    tags: [helpfulness, tone]

# The judge's questions.
comparisons:
  - id: safer
    question: Which response is safer?   # short on purpose
  - id: franker
    question: Which response states its uncertainty more plainly?
# trailing comment
"""


def run(*args: str, **kwargs):
    return CliRunner().invoke(main, ["constitution", *args], catch_exceptions=False, **kwargs)


def diff(before: str, after: str) -> tuple[list[str], list[str]]:
    """(removed lines, added lines) between two texts."""
    lines = list(difflib.ndiff(before.splitlines(), after.splitlines()))
    return [ln[2:] for ln in lines if ln.startswith("- ")], [ln[2:] for ln in lines if ln.startswith("+ ")]


@pytest.fixture
def commented(tmp_path) -> Path:
    path = tmp_path / "commented.yaml"
    path.write_text(COMMENTED, encoding="utf-8")
    assert validate_file(path) == []
    return path


def test_list_shows_bundled_and_local(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "constitutions").mkdir()
    shutil.copy(bundled_file("constitutions", "bank.yaml"), tmp_path / "constitutions" / "mybank.yaml")
    (tmp_path / "constitutions" / "broken.yaml").write_text("name: [\n")
    result = run("list")
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split() for line in result.output.splitlines()[1:]}
    assert rows["default"][1:4] == ["1.0", "16", "10"]
    assert rows["mybank"][1:4] == ["1.0", "12", "8"]
    assert "invalid" in " ".join(rows["broken"])


@pytest.mark.parametrize("fmt", ["text", "yaml", "json"])
def test_show(fmt):
    result = run("show", "default", "--format", fmt)
    assert result.exit_code == 0, result.output
    if fmt == "json":
        assert len(json.loads(result.output)["principles"]) == 16
    elif fmt == "yaml":
        assert result.output == bundled_file("constitutions", "default.yaml").read_text()
    else:
        assert "over-refusal" in result.output and "Comparisons (10)" in result.output
        assert "critique: " in result.output  # plain text when stdout is not a terminal


def test_new_empty_and_copied(tmp_path):
    empty = tmp_path / "sub" / "mine.yaml"
    assert run("new", str(empty)).exit_code == 0
    c = load_constitution(empty)
    assert c.name == "mine" and c.principles == [] and c.comparisons == []
    assert run("validate", str(empty)).exit_code == 0
    assert run("new", str(empty)).exit_code == 2  # never overwrites

    copy = tmp_path / "mybank.yaml"
    assert run("new", str(copy), "--from", "bank").exit_code == 0
    removed, added = diff(bundled_file("constitutions", "bank.yaml").read_text(), copy.read_text())
    assert (removed, added) == (["name: bank"], ["name: mybank"])


def test_new_from_a_file_with_warnings_only(tmp_path, commented):
    """Template syntax is a warning (loading goes on, text stays literal): a copy keeps it."""
    source = tmp_path / "templated.yaml"
    source.write_text(COMMENTED.replace("Which response is safer?", "Which {{ response }} is safer?"))
    copy = tmp_path / "copy.yaml"
    result = run("new", str(copy), "--from", str(source))
    assert result.exit_code == 0, result.output
    assert "Which {{ response }} is safer?" in copy.read_text()


def test_validate_reports_every_problem_with_lines(tmp_path, commented):
    broken = tmp_path / "broken.yaml"
    broken.write_text(COMMENTED.replace("weight: 2", "weight: -2").replace("id: beta", "id: alpha")
                      .replace("Which response is safer?", "Which {{ response }} is safer?"))
    result = run("validate", str(commented), str(broken))
    assert result.exit_code == 2
    lines = result.output.splitlines()
    assert f"{commented}: ok (2 principles, 2 comparisons)" in lines
    assert f"{broken}:15: principles[0].weight: must be positive" in lines
    assert any(ln.startswith(f"{broken}:18: principles[1].id: duplicate id 'alpha' (first used at line 12)") for ln in lines)
    assert any(ln.startswith(f"{broken}:29: comparisons[0].question: contains template syntax '{{{{'") for ln in lines)
    assert run("validate", str(tmp_path / "missing.yaml")).exit_code == 2


GAMMA = ["  - id: gamma",
         "    critique: Identify any private data in your last response.",
         "    revision: Rewrite your last response without private data.",
         "    weight: 1.5",
         "    tags: [privacy, care]"]


def test_add_changes_only_new_lines_and_the_version(commented):
    result = run("add", str(commented), "--id", "gamma", "--critique", "Identify any private data in your last response.",
                 "--revision", "Rewrite your last response without private data.", "--weight", "1.5",
                 "--tag", "privacy", "--tag", "care")
    assert result.exit_code == 0, result.output
    assert "version 2.3 → 2.4" in result.output
    removed, added = diff(COMMENTED, commented.read_text())
    assert removed == ['version: "2.3"   # bumped by every change']
    assert sorted(added) == sorted(['version: "2.4"   # bumped by every change', ""] + GAMMA)
    # After the last principle, spaced like its neighbours, before the comparisons' comment.
    assert "    tags: [helpfulness, tone]\n\n" + "\n".join(GAMMA) + "\n\n# The judge's questions." in commented.read_text()
    assert load_constitution(commented).principle("gamma").tags == ["privacy", "care"]


def test_add_comparison(commented):
    result = run("add-comparison", str(commented), "--id", "kinder", "--question", "Which response is kinder?")
    assert result.exit_code == 0, result.output
    removed, added = diff(COMMENTED, commented.read_text())
    assert added[1:] == ["  - id: kinder", "    question: Which response is kinder?"]
    assert commented.read_text().index("kinder") < commented.read_text().index("# trailing comment")


def test_remove_takes_the_entry_and_its_own_comments_only(commented):
    assert run("remove", str(commented), "alpha").exit_code == 0
    removed, added = diff(COMMENTED, commented.read_text())
    assert added == ['version: "2.4"   # bumped by every change']
    assert removed[0] == 'version: "2.3"   # bumped by every change'
    assert sorted(removed[1:]) == sorted(["", "  # about alpha", "  - id: alpha",
                                          "    critique: 'Point out anything unsafe in your last response.'   # single quotes",
                                          '    revision: "Rewrite your last response to make it safe."',
                                          "    weight: 2", "    tags: [harm]"])
    assert "principles:\n  # --- first group\n\n  - id: beta\n" in commented.read_text()
    assert run("remove", str(commented), "franker").exit_code == 0
    assert "# trailing comment" in commented.read_text()
    assert [c.id for c in load_constitution(commented).comparisons] == ["safer"]


def test_set_coerces_values_and_keeps_comments(commented):
    assert run("set", str(commented), "alpha", "weight", "0.5").exit_code == 0
    assert run("set", str(commented), "safer", "question", "Which response is less dangerous?").exit_code == 0
    assert run("set", str(commented), "beta", "tags", "helpfulness, style").exit_code == 0
    removed, added = diff(COMMENTED, commented.read_text())
    assert removed == ['version: "2.3"   # bumped by every change', "    weight: 2",
                       "    tags: [helpfulness, tone]", "    question: Which response is safer?   # short on purpose"]
    assert added == ['version: "2.6"   # bumped by every change', "    weight: 0.5",
                     "    tags: [helpfulness, style]", "    question: Which response is less dangerous?   # short on purpose"]
    c = load_constitution(commented)
    assert c.principle("alpha").weight == 0.5 and c.principle("beta").tags == ["helpfulness", "style"]
    assert run("set", str(commented), "alpha", "id", "alpha2").exit_code == 0  # the key on the "- " line
    assert "\n  # about alpha\n  - id: alpha2\n" in commented.read_text()


FOLDED = COMMENTED.replace("    question: Which response states its uncertainty more plainly?\n",
                           "    question: >-   # folded on purpose\n      Which response states its\n"
                           "      uncertainty more plainly?\n")


def test_set_keeps_folded_and_literal_block_styles(tmp_path):
    path = tmp_path / "folded.yaml"
    path.write_text(FOLDED, encoding="utf-8")
    assert run("set", str(path), "franker", "question", "Which response admits doubt?").exit_code == 0
    assert run("set", str(path), "beta", "revision", "Rewrite your last response helpfully.").exit_code == 0
    removed, added = diff(FOLDED, path.read_text())
    assert removed == ['version: "2.3"   # bumped by every change', "      Rewrite your last response", "      so it helps.",
                       "      Which response states its", "      uncertainty more plainly?"]
    assert added == ['version: "2.5"   # bumped by every change', "      Rewrite your last response helpfully.",
                     "      Which response admits doubt?"]
    assert "    revision: |-\n      Rewrite your last response helpfully.\n" in path.read_text()
    assert "    question: >-   # folded on purpose\n      Which response admits doubt?\n" in path.read_text()
    c = load_constitution(path)
    assert c.comparisons[1].question == "Which response admits doubt?"


@pytest.mark.parametrize("args, message", [
    (["set", "{path}", "alpha", "colour", "red"], "no field 'colour'"),
    (["set", "{path}", "alpha", "weight", "heavy"], "must be a number"),
    (["set", "{path}", "alpha", "weight", "-1"], "commented.yaml:15: principles[0].weight: must be positive"),
    (["set", "{path}", "nobody", "weight", "1"], "no principle or comparison with id 'nobody'"),
    (["remove", "{path}", "nobody"], "no principle or comparison"),
    (["add", "{path}", "--id", "beta", "--critique", "Something new.", "--revision", "Fix it."], "already used"),
    (["add", "{path}", "--id", "delta", "--critique", "Use {{ x }}.", "--revision", "Fix it."], "template syntax"),
    (["add", "{path}", "--id", "delta", "--critique", "Point out anything unsafe in your last response!",
      "--revision", "Rewrite it."], "the same text as principles[0].critique (line 13)"),
    (["add", "{path}", "--id", "delta", "--critique", "Point out anything unsafe in your last response, please.",
      "--revision", "Rewrite it."], "nearly the same text"),
    (["add-comparison", "{path}", "--id", "alpha", "--question", "Which?"], "already used"),
])
def test_refused_changes_exit_2_and_leave_the_file_alone(commented, args, message):
    result = run(*[a.replace("{path}", str(commented)) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert commented.read_text() == COMMENTED


def write_editor(tmp_path: Path, body: str) -> str:
    script = tmp_path / "editor.py"
    script.write_text("import sys\npath = sys.argv[1]\ntext = open(path).read()\n" + body)
    return f"{sys.executable} {script}"


def test_edit_refuses_invalid_text_and_keeps_it_for_recovery(tmp_path, commented, monkeypatch):
    monkeypatch.setenv("EDITOR", write_editor(tmp_path, "open(path, 'w').write('name: [unclosed\\n' + text)\n"))
    result = run("edit", str(commented))
    assert result.exit_code == 2
    recovery = commented.with_name("commented.yaml.edit-recovery")
    assert f"your text is in {recovery}" in result.output
    assert re.search(r"commented\.yaml:\d+: yaml: not valid YAML", result.output)
    assert commented.read_text() == COMMENTED
    assert recovery.read_text().startswith("name: [unclosed\n")
    assert run("edit", str(commented)).exit_code == 2  # a second recovery file does not clobber the first
    assert commented.with_name("commented.yaml.edit-recovery.1").exists()


def test_edit_saves_valid_text_and_bumps_the_version(tmp_path, commented, monkeypatch):
    monkeypatch.setenv("EDITOR", write_editor(
        tmp_path, "open(path, 'w').write(text.replace('safer?', 'less risky?'))\n"))
    result = run("edit", str(commented))
    assert result.exit_code == 0, result.output
    removed, added = diff(COMMENTED, commented.read_text())
    assert added == ['version: "2.4"   # bumped by every change',
                     "    question: Which response is less risky?   # short on purpose"]
    monkeypatch.setenv("EDITOR", write_editor(tmp_path, "pass\n"))
    assert "no change" in run("edit", str(commented)).output


def test_diff(tmp_path, commented):
    other = tmp_path / "other.yaml"
    other.write_text(COMMENTED.replace("weight: 2", "weight: 4").replace("  - id: franker", "  - id: plainer"))
    result = run("diff", str(commented), str(other))
    assert result.exit_code == 0
    assert result.output.splitlines() == ["~ principle alpha: weight: 2.0 → 4.0",
                                          "- comparison franker", "+ comparison plainer"]
    assert run("diff", str(commented), str(commented)).output == "no differences\n"


def _add_principles(path: str, worker: int, count: int) -> None:
    # Texts differ in every word, so the near-duplicate check does not refuse them.
    topics = ["boats", "violins", "glaciers", "spreadsheets", "orchards", "satellites", "bakeries", "volcanoes",
              "tramways", "beehives", "lighthouses", "quarries"]
    for j in range(count):
        topic = topics[worker * count + j]
        result = CliRunner().invoke(main, ["constitution", "add", path, "--id", f"w{worker}-{j}",
                                           "--critique", f"Does the answer mention {topic} ({worker}-{j})?",
                                           "--revision", f"Remove every mention of {topic}."])
        assert result.exit_code == 0, result.output


def test_concurrent_writers_serialise_and_never_leave_a_torn_file(commented):
    workers, each = 4, 3
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_add_principles, args=(str(commented), w, each)) for w in range(workers)]
    for p in procs:
        p.start()
    seen = 0
    while any(p.is_alive() for p in procs):
        # A reader at any moment sees a whole, valid file: the old one or a new one.
        assert validate_file(commented) == []
        seen += 1
        time.sleep(0.005)
    for p in procs:
        p.join()
        assert p.exitcode == 0
    c = load_constitution(commented)
    assert {p.id for p in c.principles} >= {f"w{w}-{j}" for w in range(workers) for j in range(each)}
    assert c.version == f"2.{3 + workers * each}"
    assert yaml.safe_load(commented.read_text())["name"] == "commented"
    assert seen > 0
    assert not list(commented.parent.glob(".commented.yaml.*.tmp"))  # no temp files left behind


def test_emptying_a_list_and_filling_it_again(commented):
    for ident in ("safer", "franker"):
        assert run("remove", str(commented), ident).exit_code == 0
    assert "\ncomparisons: []\n# trailing comment\n" in commented.read_text()
    assert run("add-comparison", str(commented), "--id", "safer", "--question", "Which response is safer?").exit_code == 0
    removed, added = diff(COMMENTED, commented.read_text())
    assert removed == ['version: "2.3"   # bumped by every change', "    question: Which response is safer?   # short on purpose",
                       "  - id: franker", "    question: Which response states its uncertainty more plainly?"]
    assert added == ['version: "2.6"   # bumped by every change', "    question: Which response is safer?"]


def test_edit_can_repair_a_broken_file(tmp_path, commented, monkeypatch):
    commented.write_text(COMMENTED.replace("weight: 2", "weight: -2"))
    assert run("validate", str(commented)).exit_code == 2
    monkeypatch.setenv("EDITOR", write_editor(tmp_path, "open(path, 'w').write(text.replace('weight: -2', 'weight: 2'))\n"))
    result = run("edit", str(commented))
    assert result.exit_code == 0, result.output
    assert commented.read_text() == COMMENTED.replace('version: "2.3"', 'version: "2.4"')


@pytest.mark.parametrize("args", [["show", "default"], ["diff", "default", "bank"]])
def test_closed_pipe_exits_quietly(args):
    """`cai constitution show default | head`: a reader that stops early is not an error."""
    import os
    import subprocess

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line: every write meets EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "cai.cli", "constitution", *args], stdout=write_end,
                              stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 0 and proc.stderr.decode() == ""
