"""The constitution model, loading with file:line errors, sampling, and the line-level editor."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from cai.constitution import (
    DEFAULT_CONSTITUTION,
    Constitution,
    ConstitutionError,
    Editor,
    Principle,
    bump_version,
    check_text,
    list_constitutions,
    load_constitution,
    update_file,
    validate_file,
)
from cai.errors import UsageError
from cai.resources import bundled_dir

BUNDLED = sorted(bundled_dir("constitutions").glob("*.yaml"))

SMALL = """\
name: small
version: "1.0"
description: A small test constitution.
principles:
  - id: harm
    critique: Point out anything harmful in your last response.
    revision: Rewrite your last response without the harmful parts.
    weight: 3
  - id: helpful
    critique: Point out where your last response refused something harmless.
    revision: Rewrite your last response to help fully.
comparisons:
  - id: safer
    question: Which response is less harmful overall, all things being considered?
  - id: kinder
    question: Which response is kinder to the user?
  - id: clearer
    question: Which response is easier to follow?
"""

# Line numbers below are part of the test: every problem must point at its own line.
BROKEN = """\
name: broken
version: "1.0"
description: test
colour: blue
principles:
  - id: a
    critique: Is the answer rude to anyone at all?
    revision: Make it polite.
    weight: -1
  - id: a
    critique: "Use {{ topic }} in the critique"
  - id: c
    critique: is the answer   RUDE to anyone at all?
    revision: Rewrite the answer so that it is shorter.
    weight: lots
comparisons:
  - id: q1
    question: ""
  - question: Which one?
"""


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.stem)
def test_every_bundled_constitution_loads_and_validates(path):
    assert validate_file(path) == []
    c = load_constitution(path)
    assert c.principles and len(c.comparisons) >= 8 and len(c.few_shot) >= 2
    for p in c.principles:
        assert "only the rewritten response" in p.revision, p.id  # no preamble in revisions
        assert p.tags
    for ex in c.few_shot:  # the few-shot turns must fit a 2,048-token context with room to spare
        assert sum(len(t.split()) for t in (ex.prompt, ex.answer, ex.critique, ex.revision)) < 150


def test_default_constitution_covers_harm_and_helpfulness():
    c = load_constitution(DEFAULT_CONSTITUTION)
    assert len(c.principles) >= 12
    ids = {p.id for p in c.principles}
    assert {"physical-harm", "illegal-acts", "hate", "self-harm", "privacy", "honesty", "manipulation",
            "medical", "legal", "financial", "over-refusal", "preachy"} <= ids
    tags = {t for p in c.principles for t in p.tags}
    assert {"harm", "helpfulness", "legality", "privacy", "honesty"} <= tags


def test_names_resolve_to_bundled_and_local_files(tmp_path, monkeypatch):
    names = dict(list_constitutions())
    assert {"default", "bank"} <= set(names)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "constitutions").mkdir()
    write(tmp_path / "constitutions", SMALL.replace("name: small", "name: default"), "default.yaml")
    write(tmp_path / "constitutions", SMALL, "mine.yaml")
    assert load_constitution("mine").name == "small"
    # A local file overrides the bundled one of the same name.
    assert len(load_constitution("default").principles) == 2
    assert load_constitution("bank").name == "bank"
    with pytest.raises(UsageError, match="known names are .*bank.*mine"):
        load_constitution("nonesuch")
    with pytest.raises(UsageError, match="no such constitution file"):
        load_constitution("missing.yaml")


def test_sha256_is_content_only(tmp_path):
    a = load_constitution(write(tmp_path, SMALL, "a.yaml"))
    b = load_constitution(write(tmp_path, "# a comment changes nothing\n" + SMALL, "b.yaml"))
    assert a.source != b.source and a.sha256() == b.sha256()
    expected = json.dumps(a.model_dump(exclude={"source"}), sort_keys=True, separators=(",", ":"))
    assert a.sha256() == hashlib.sha256(expected.encode()).hexdigest()
    assert "source" not in a.model_dump()
    changed = a.model_copy(update={"version": "1.1"})
    assert changed.sha256() != a.sha256()


def test_draws_are_deterministic_weighted_and_independent(tmp_path):
    c = load_constitution(write(tmp_path, SMALL))
    assert [c.draw_principle(f"r{i}:0").id for i in range(50)] == [c.draw_principle(f"r{i}:0").id for i in range(50)]
    counts = Counter(c.draw_principle(f"rec{i}:1").id for i in range(4000))
    assert 0.70 < counts["harm"] / 4000 < 0.80  # weight 3 of 4
    # Consecutive rounds of one record are drawn independently, not in lockstep.
    rounds = [(c.draw_principle(f"x{i}:0").id, c.draw_principle(f"x{i}:1").id) for i in range(400)]
    assert 0.25 < sum(a == b for a, b in rounds) / 400 < 0.85


def test_draw_comparisons(tmp_path):
    c = load_constitution(write(tmp_path, SMALL))
    two = c.draw_comparisons("pair-1", 2)
    assert len({q.id for q in two}) == 2 and two == c.draw_comparisons("pair-1", 2)
    five = c.draw_comparisons("pair-1", 5)
    assert len(five) == 5 and {q.id for q in five} == {"safer", "kinder", "clearer"}
    assert len({tuple(q.id for q in c.draw_comparisons(f"p{i}", 3)) for i in range(50)}) > 1
    assert c.principle("helpful").weight == 1.0
    with pytest.raises(UsageError, match="no principle"):
        c.principle("nope")


def test_a_broken_file_lists_every_problem_with_its_line(tmp_path):
    problems = validate_file(write(tmp_path, BROKEN))
    found = {(p.line, p.field) for p in problems}
    assert found == {
        (4, "colour"),
        (9, "principles[0].weight"),
        (10, "principles[1].id"),  # duplicate
        (10, "principles[1].revision"),  # critique without revision
        (11, "principles[1].critique"),  # template syntax
        (13, "principles[2].critique"),  # same text as [0] after normalising case and spaces
        (15, "principles[2].weight"),
        (18, "comparisons[0].question"),
        (19, "comparisons[1].id"),
    }, "\n".join(map(str, problems))
    text = {p.field: p.message for p in problems}
    assert "must be positive" in text["principles[0].weight"]
    assert "no matching revision" in text["principles[1].revision"]
    assert "template syntax" in text["principles[1].critique"]
    assert "unknown key" in text["colour"]
    assert str(problems[0]) == f"{tmp_path / 'c.yaml'}:4: colour: " + problems[0].message


def test_load_refuses_with_one_message_naming_file_line_and_field(tmp_path):
    path = write(tmp_path, SMALL.replace("    weight: 3", "    weight: 0"))
    with pytest.raises(ConstitutionError) as err:
        load_constitution(path)
    assert str(err.value) == f"{path}:8: principles[0].weight: must be positive"
    assert isinstance(err.value, UsageError) and len(err.value.problems) == 1

    path = write(tmp_path, SMALL.replace("comparisons:\n", "comparisons: [\n"), "syntax.yaml")
    with pytest.raises(ConstitutionError, match=r"syntax\.yaml:\d+: yaml: not valid YAML"):
        load_constitution(path)


@pytest.mark.parametrize("text, field, message", [
    ("", "document", "is empty"),
    ("- a\n- b\n", "document", "expected a mapping"),
    (SMALL.replace("name: small\n", ""), "name", "required field is missing"),
    (SMALL.replace("    weight: 3\n", "    weight: 3\n    weight: 4\n"), "yaml", "duplicate key"),
    (SMALL.replace("version: \"1.0\"", "version: beta"), "version", "must contain a number"),
    (SMALL.replace("id: harm", "id: has space"), "principles[0].id", "short name"),
    (SMALL.replace("id: safer", "id: harm"), "comparisons[0].id", "duplicate id 'harm'"),
    (SMALL + "source: x.yaml\n", "source", "unknown key"),
    (SMALL.replace("  - id: kinder\n    question: Which response is kinder to the user?\n",
                   "  - id: kinder\n    question: Which response is less harmful overall, all things considered?\n"),
     "comparisons[1].question", "nearly the same text"),
    (SMALL + "system_prompt: 'You are {% if x %}kind{% endif %}'\n", "system_prompt", "template syntax"),
])
def test_each_kind_of_problem(tmp_path, text, field, message):
    problems = validate_file(write(tmp_path, text))
    assert any(p.field == field and message in p.message for p in problems), problems


def test_numbers_as_versions_and_defaults(tmp_path):
    c = load_constitution(write(tmp_path, SMALL.replace('version: "1.0"', "version: 3")))
    assert c.version == "3" and c.few_shot == [] and c.system_prompt is None
    assert c.principles[1].weight == 1.0 and c.principles[1].tags == []


def test_the_model_checks_unique_ids_when_built_directly():
    p = Principle(id="x", critique="Criticise it.", revision="Fix it.")
    with pytest.raises(ValidationError, match="duplicate ids: x"):
        Constitution(name="n", version="1", description="d", principles=[p, p], comparisons=[])


def test_an_empty_constitution_is_valid_but_cannot_be_drawn_from():
    c, problems = check_text('name: e\nversion: "1.0"\ndescription: d\nprinciples: []\ncomparisons: []\n')
    assert problems == []
    with pytest.raises(UsageError, match="no principles"):
        c.draw_principle("k")
    with pytest.raises(UsageError, match="no comparisons"):
        c.draw_comparisons("k", 1)


@pytest.mark.parametrize("old, new", [("1.0", "1.1"), ("3", "4"), ("1.9", "1.10"), ("v2.0-rc1", "v2.0-rc2"),
                                      ("2024.07", "2024.08"), ("1.09", "1.10")])
def test_bump_version(old, new):
    assert bump_version(old) == new


def test_editor_keeps_crlf_line_endings(tmp_path):
    path = tmp_path / "crlf.yaml"
    path.write_bytes(SMALL.replace("\n", "\r\n").encode())
    update_file(path, lambda e: e.set("safer", "question", "Which response is safer?"))
    data = path.read_bytes()
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
    assert b'version: "1.1"\r\n' in data


def test_editor_set_keeps_the_style_of_the_value():
    text = SMALL.replace("question: Which response is kinder to the user?",
                         "question: 'Which response is kinder to the user?'   # tone")
    e = Editor(text)
    e.set("kinder", "question", "Which response is warmer?")
    before = next(ln for ln in text.splitlines() if "# tone" in ln)
    after = next(ln for ln in e.text.splitlines() if "warmer" in ln)
    # Same quotes, and the comment stays in its column.
    assert after.startswith("    question: 'Which response is warmer?'  ") and after.index("#") == before.index("#")
    e = Editor(text)
    e.set("helpful", "tags", ["helpfulness", "tone"])
    assert "    revision: Rewrite your last response to help fully.\n    tags: [helpfulness, tone]\n" in e.text


def test_update_file_never_writes_an_invalid_result(tmp_path):
    path = write(tmp_path, SMALL)
    with pytest.raises(ConstitutionError, match=r"c\.yaml:8: principles\[0\]\.weight: must be positive.*nothing"):
        update_file(path, lambda e: e.set("harm", "weight", -2))
    assert path.read_text() == SMALL
    unchanged = update_file(path, lambda e: None)
    assert not unchanged.changed and path.read_text() == SMALL


WARNED = SMALL.replace("Point out anything harmful in your last response.", '"Point out {{ topic }} in your last response."') \
    .replace("question: Which response is easier to follow?", "question: Which response is kinder to the user, overall?")


def test_loading_for_use_warns_about_template_syntax_and_near_duplicates(tmp_path):
    path = write(tmp_path, WARNED)
    notes: list[str] = []
    c = load_constitution(path, warn=notes.append)
    # the text stays as written: it is data for the model, never rendered
    assert c.principle("harm").critique == "Point out {{ topic }} in your last response."
    assert notes == [
        f"warning: {path}:6: principles[0].critique: contains template syntax '{{{{': constitution text is sent "
        "to the model as it is, never rendered",
        f"warning: {path}:18: comparisons[2].question: nearly the same text (93% of words) as "
        "comparisons[1].question (line 16): merge the two, or raise the weight of one",
    ]
    # `validate` still calls them problems, and the strict check (used by `edit`) still refuses
    assert [p.line for p in validate_file(path)] == [6, 18] and all(p.warning for p in validate_file(path))
    assert check_text(WARNED)[0] is None and check_text(WARNED, strict=False)[0] is not None


def test_loading_prints_warnings_to_stderr_by_default(tmp_path, capsys):
    path = write(tmp_path, WARNED)
    load_constitution(path)
    err = capsys.readouterr().err
    assert f"warning: {path}:6: principles[0].critique: contains template syntax" in err


def test_schema_errors_stay_fatal_next_to_warnings(tmp_path):
    path = write(tmp_path, WARNED.replace("    weight: 3", "    weight: 0"))
    with pytest.raises(ConstitutionError) as err:
        load_constitution(path, warn=None)
    # only the error, not the warnings, and it is the message
    assert str(err.value) == f"{path}:8: principles[0].weight: must be positive"
    assert [p.field for p in err.value.problems] == ["principles[0].weight"]


def test_a_file_with_warnings_stays_editable_but_an_edit_may_not_add_one(tmp_path):
    path = write(tmp_path, WARNED)
    assert update_file(path, lambda e: e.set("harm", "weight", 5)).changed
    assert load_constitution(path, warn=None).principle("harm").weight == 5
    before = path.read_text()
    with pytest.raises(ConstitutionError, match=r"principles\[1\]\.critique: contains template syntax.*nothing was written"):
        update_file(path, lambda e: e.set("helpful", "critique", "Say {% raw %}"))
    assert path.read_text() == before
