"""Prompt loading in every supported format, bad rows, streaming, and the bundled data sets."""

from __future__ import annotations

import csv
import inspect
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from cai.errors import UsageError
from cai.inputs import (BadRowError, PromptRow, count_prompts, default_prompts_path, eval_prompts_path,
                        iter_prompts, messages_key, prompts_source)
from cai.resources import bundled_file

HARM = {"physical_harm", "illegal", "hate_harassment", "self_harm", "privacy", "deception_manipulation",
        "medical", "legal", "financial"}
BENIGN = {"helpful", "benign_edge"}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def texts(rows) -> list[str]:
    return [r.prompt_text for r in rows]


# --- formats ---------------------------------------------------------------------------------


def test_jsonl_prompt_messages_and_meta(tmp_path):
    p = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "hello there", "category": "helpful", "harmful": False, "id": "x1", "tags": ["a"]},
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]},
    ])
    rows = list(iter_prompts(p))
    assert [r.index for r in rows] == [0, 1]
    assert rows[0].messages == [{"role": "user", "content": "hello there"}]
    assert rows[0].category == "helpful"
    assert rows[0].meta == {"harmful": False, "id": "x1"}  # lists are not provenance scalars
    assert rows[1].messages[0] == {"role": "system", "content": "be brief"}
    assert rows[1].prompt_text == "hi" and rows[1].category is None and rows[1].meta == {}


def test_json_extension_and_custom_field(tmp_path):
    p = write_jsonl(tmp_path / "p.json", [{"question": "why is the sky blue?", "prompt": "ignored"}])
    (row,) = iter_prompts(p, prompt_field="question")
    assert row.prompt_text == "why is the sky blue?"
    assert row.meta == {"prompt": "ignored"}


def test_mt_bench_turns_take_the_first_turn(tmp_path):
    p = write_jsonl(tmp_path / "q.jsonl", [
        {"question_id": 81, "category": "writing", "turns": ["Write a travel blog post.", "Rewrite it in rhyme."]},
    ])
    (row,) = iter_prompts(p)
    assert row.messages == [{"role": "user", "content": "Write a travel blog post."}]
    assert row.category == "writing" and row.meta == {"question_id": 81}


def test_txt_skips_blank_lines_and_numbers_rows(tmp_path):
    p = tmp_path / "p.txt"
    p.write_text("\ufefffirst prompt\n\n   \nsecond prompt\r\nthird\n", encoding="utf-8")
    rows = list(iter_prompts(p))
    assert texts(rows) == ["first prompt", "second prompt", "third"]
    assert [r.index for r in rows] == [0, 1, 2]
    # A txt file has no field names, so any --prompt-field works.
    assert texts(iter_prompts(p, prompt_field="question")) == texts(rows)


def test_csv_columns_quotes_and_bom(tmp_path):
    p = tmp_path / "p.csv"
    with open(p, "w", encoding="utf-8-sig", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "prompt", "category"])
        w.writerow(["1", "plain prompt", "helpful"])
        w.writerow(["2", "a prompt, with a comma\nand a second line", ""])
        w.writerow(["3", "last", "legal"])
    rows = list(iter_prompts(p))
    assert texts(rows) == ["plain prompt", "a prompt, with a comma\nand a second line", "last"]
    assert rows[0].meta == {"id": "1"} and rows[0].category == "helpful"
    assert rows[1].category is None  # an empty cell is no category


def test_parquet_streams_batches(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    n = 2500  # more than one reader batch
    table = pa.table({"text": [f"prompt {i}" for i in range(n)], "category": ["helpful"] * n, "k": list(range(n))})
    p = tmp_path / "p.parquet"
    pq.write_table(table, p, row_group_size=700)
    rows = list(iter_prompts(p, prompt_field="text"))
    assert len(rows) == n and rows[-1].prompt_text == f"prompt {n - 1}" and rows[-1].meta == {"k": n - 1}
    assert count_prompts(p, prompt_field="text") == n


def test_parquet_messages_column(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    msgs = [[{"role": "user", "content": "one"}], [{"role": "system", "content": "s"}, {"role": "user", "content": "two"}]]
    p = tmp_path / "m.parquet"
    pq.write_table(pa.table({"messages": msgs}), p)
    assert texts(iter_prompts(p)) == ["one", "two"]


def test_datasets_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"prompt": ["a", "b", "c"], "category": ["helpful", "legal", "illegal"],
                                     "harmful": [False, True, True]})
    folder = tmp_path / "ds"
    ds.save_to_disk(str(folder))
    rows = list(iter_prompts(folder))
    assert texts(rows) == ["a", "b", "c"]
    assert rows[1].category == "legal" and rows[1].meta == {"harmful": True}
    assert count_prompts(folder) == 3


def test_datasets_dict_folder_names_its_splits(tmp_path):
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"prompt": ["a"]}),
                               "test": datasets.Dataset.from_dict({"prompt": ["b"]})})
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(UsageError, match="train"):
        iter_prompts(tmp_path / "dd").__next__()
    assert texts(iter_prompts(tmp_path / "dd" / "test")) == ["b"]


def test_plain_folder_is_not_a_dataset(tmp_path):
    (tmp_path / "junk").mkdir()
    with pytest.raises(UsageError, match="not a datasets folder"):
        list(iter_prompts(tmp_path / "junk"))


# --- bad input -------------------------------------------------------------------------------


def test_missing_file_and_unknown_format_fail_at_the_call(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        iter_prompts(tmp_path / "nope.jsonl")
    (tmp_path / "p.xlsx").write_text("x")
    with pytest.raises(UsageError, match="unknown prompt format"):
        iter_prompts(tmp_path / "p.xlsx")
    with pytest.raises(UsageError):
        iter_prompts(default_prompts_path(), on_bad_row="ignore")  # type: ignore[arg-type]


def test_bad_row_error_is_a_usage_error():
    assert issubclass(BadRowError, UsageError)


BAD_JSONL = [
    {"prompt": "good one"},
    "{not json",
    {"prompt": ""},
    {"prompt": 42},
    {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
    {"messages": [{"role": "wizard", "content": "q"}]},
    {"category": "helpful"},
    ["a", "list"],
    {"prompt": "good two"},
]


@pytest.mark.parametrize("line, field", [(2, "(json)"), (3, "prompt"), (4, "prompt"), (5, "messages[1]"),
                                         (6, "messages[0]"), (7, "prompt"), (8, "(row)")])
def test_jsonl_bad_row_fails_with_file_line_and_field(tmp_path, line, field):
    # Put only the good first row and the one bad row under test in the file, keeping its line number.
    rows = ['{"prompt": "pad"}'] * (line - 1) + [BAD_JSONL[line - 1]]
    p = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(BadRowError) as info:
        list(iter_prompts(p))
    err = info.value
    assert err.number == line and err.field == field and err.unit == "line"
    assert str(err).startswith(f"{p}: line {line}: {field}: ")


def test_jsonl_skip_reports_and_continues(tmp_path):
    p = write_jsonl(tmp_path / "bad.jsonl", BAD_JSONL)
    skipped: list[BadRowError] = []
    rows = list(iter_prompts(p, on_bad_row="skip", on_skip=skipped.append))
    assert texts(rows) == ["good one", "good two"]
    assert [e.number for e in skipped] == [2, 3, 4, 5, 6, 7, 8]
    assert rows[1].index == 8  # bad rows keep their place in the numbering
    assert count_prompts(p) == 2


def test_jsonl_blank_lines_keep_line_numbers(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text('{"prompt": "a"}\n\n\n{"prompt": ""}\n', encoding="utf-8")
    with pytest.raises(BadRowError, match=r": line 4: prompt: is empty"):
        list(iter_prompts(p))


def test_json_array_file_gets_a_format_hint(tmp_path):
    p = tmp_path / "arr.json"
    p.write_text(json.dumps([{"prompt": "a"}, {"prompt": "b"}], indent=2), encoding="utf-8")
    with pytest.raises(UsageError, match="one object per line"):
        list(iter_prompts(p, on_bad_row="skip"))


def test_txt_bad_encoding_is_one_bad_row(tmp_path):
    p = tmp_path / "p.txt"
    p.write_bytes(b"fine\n\xff\xfe broken\nalso fine\n")
    with pytest.raises(BadRowError, match=r"line 2: \(encoding\)"):
        list(iter_prompts(p))
    skipped = []
    assert texts(iter_prompts(p, on_bad_row="skip", on_skip=skipped.append)) == ["fine", "also fine"]
    assert [e.number for e in skipped] == [2]


def test_csv_bad_rows_name_their_line(tmp_path):
    p = tmp_path / "p.csv"
    # line 3 holds an empty prompt, line 4 an unquoted comma (one field too many).
    p.write_text('prompt,category\n"ok, quoted",helpful\n,legal\nsplit, by comma,helpful\nlast,\n', encoding="utf-8")
    with pytest.raises(BadRowError) as info:
        list(iter_prompts(p))
    assert (info.value.number, info.value.field) == (3, "prompt")
    skipped = []
    rows = list(iter_prompts(p, on_bad_row="skip", on_skip=skipped.append))
    assert texts(rows) == ["ok, quoted", "last"]
    assert [(e.number, e.field) for e in skipped] == [(3, "prompt"), (4, "(csv)")]


def test_csv_line_numbers_follow_multiline_fields(tmp_path):
    p = tmp_path / "p.csv"
    # Rows of empty cells (",,") are spreadsheet padding and skipped like blank lines.
    p.write_text('prompt,id\n"two\nlines",1\n,\n,3\n', encoding="utf-8")
    with pytest.raises(BadRowError, match=r": line 5: prompt: is empty"):
        list(iter_prompts(p))


@pytest.mark.parametrize("fmt", ["csv", "parquet", "datasets"])
def test_missing_column_is_one_usage_error_not_every_row(tmp_path, fmt):
    rows = {"text": ["a", "b"]}
    if fmt == "csv":
        path = tmp_path / "p.csv"
        path.write_text("text\na\nb\n", encoding="utf-8")
    elif fmt == "parquet":
        pa = pytest.importorskip("pyarrow")
        pq = pytest.importorskip("pyarrow.parquet")
        path = tmp_path / "p.parquet"
        pq.write_table(pa.table(rows), path)
    else:
        datasets = pytest.importorskip("datasets")
        path = tmp_path / "ds"
        datasets.Dataset.from_dict(rows).save_to_disk(str(path))
    with pytest.raises(UsageError, match=r"no column 'prompt' \(columns: text\)") as info:
        list(iter_prompts(path, on_bad_row="skip"))
    assert not isinstance(info.value, BadRowError)
    assert texts(iter_prompts(path, prompt_field="text")) == ["a", "b"]


def test_parquet_null_prompt_is_a_bad_row(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    p = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": ["a", None, "c"]}), p)
    with pytest.raises(BadRowError, match=r": row 2: prompt: missing"):
        list(iter_prompts(p))
    assert texts(iter_prompts(p, on_bad_row="skip")) == ["a", "c"]


def test_messages_must_end_with_a_non_empty_user_turn(tmp_path):
    p = write_jsonl(tmp_path / "m.jsonl", [{"messages": []}, {"messages": [{"role": "user", "content": "  "}]}])
    skipped = []
    assert list(iter_prompts(p, on_bad_row="skip", on_skip=skipped.append)) == []
    assert [e.field for e in skipped] == ["messages", "messages[0]"]


# --- streaming and limits --------------------------------------------------------------------


def test_iter_prompts_is_a_lazy_generator(tmp_path):
    p = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "ok"}, "{broken"])
    it = iter_prompts(p)
    assert inspect.isgenerator(it)
    assert next(it).prompt_text == "ok"  # the bad second line is not read until asked for
    with pytest.raises(BadRowError):
        next(it)


def test_limit_stops_early_without_reading_further(tmp_path):
    p = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"p{i}"} for i in range(5)] + ["{broken"])
    assert texts(iter_prompts(p, limit=3)) == ["p0", "p1", "p2"]
    assert texts(iter_prompts(p, limit=5)) == [f"p{i}" for i in range(5)]  # never touches the bad line
    assert list(iter_prompts(p, limit=0)) == []
    assert count_prompts(p, limit=2) == 2
    with pytest.raises(UsageError):
        iter_prompts(p, limit=-1)


def test_limit_counts_good_rows_when_skipping(tmp_path):
    p = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}, {"prompt": ""}, {"prompt": "b"}, {"prompt": "c"}])
    assert texts(iter_prompts(p, on_bad_row="skip", limit=2)) == ["a", "b"]


def test_large_file_streams_with_flat_memory(tmp_path):
    import tracemalloc

    p = tmp_path / "big.jsonl"
    with open(p, "w", encoding="utf-8") as fh:
        for i in range(50_000):
            fh.write(json.dumps({"prompt": f"prompt number {i} " + "x" * 100, "category": "helpful"}) + "\n")
    tracemalloc.start()
    n = 0
    for _ in iter_prompts(p):
        n += 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == 50_000
    assert peak < 5_000_000, f"peak {peak} bytes: rows are being held in memory"


def test_default_path_is_the_bundled_set():
    assert default_prompts_path() == bundled_file("data", "red_team.jsonl")
    assert next(iter_prompts(None)).prompt_text == next(iter_prompts(default_prompts_path())).prompt_text
    assert isinstance(next(iter_prompts(eval_prompts_path())), PromptRow)


def test_prompts_source_names_what_a_run_reads(tmp_path):
    assert prompts_source(None) == default_prompts_path() and prompts_source(None).is_file()
    p = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "hi"}])
    assert prompts_source(str(p)) == p
    with pytest.raises(UsageError, match="no such file"):
        prompts_source(str(tmp_path / "missing.jsonl"))


def test_messages_key_is_equal_exactly_for_equal_messages():
    a = [{"role": "user", "content": "hi"}]
    assert messages_key(a) == messages_key([{"content": "hi", "role": "user"}])
    assert messages_key(a) != messages_key([{"role": "user", "content": "hi "}])
    assert messages_key(a) != messages_key([{"role": "system", "content": "x"}, *a])


# --- the bundled data ------------------------------------------------------------------------


def _load(name: str) -> list[dict]:
    with open(bundled_file("data", name), encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def test_bundled_red_team_set():
    raw = _load("red_team.jsonl")
    assert all(set(r) == {"prompt", "category"} for r in raw)
    rows = list(iter_prompts(default_prompts_path()))
    assert len(rows) == len(raw) >= 150
    cats = Counter(r.category for r in rows)
    assert set(cats) <= HARM | BENIGN
    assert set(cats) >= HARM | BENIGN, "every category is represented"
    red = sum(cats[c] for c in HARM)
    assert 0.6 <= red / len(rows) <= 0.72, f"about two thirds red-team, got {red}/{len(rows)}"
    assert min(cats[c] for c in HARM) >= 8 and cats["benign_edge"] >= 10
    prompts = [_norm(r.prompt_text) for r in rows]
    assert len(set(prompts)) == len(prompts), "duplicate prompts"
    assert max(len(r.prompt_text.split()) for r in rows) < 60


def test_bundled_eval_set_is_balanced_and_held_out():
    raw = _load("eval_prompts.jsonl")
    assert len(raw) == 64
    assert all(set(r) == {"prompt", "category", "harmful"} and isinstance(r["harmful"], bool) for r in raw)
    assert sum(r["harmful"] for r in raw) == 32
    assert all((r["category"] in HARM) == r["harmful"] for r in raw)
    assert {r["category"] for r in raw if r["harmful"]} == HARM
    assert {r["category"] for r in raw if not r["harmful"]} == BENIGN
    evals = [_norm(r["prompt"]) for r in raw]
    assert len(set(evals)) == len(evals)
    train = {_norm(r["prompt"]) for r in _load("red_team.jsonl")}
    pairs = {_norm(r["prompt"]) for r in _load("judge_pairs.jsonl")}
    assert not set(evals) & train, "eval prompts must be held out from the training prompts"
    assert not set(evals) & pairs
    rows = list(iter_prompts(eval_prompts_path()))
    assert len(rows) == 64 and all(isinstance(r.meta.get("harmful"), bool) for r in rows)
    # The demo evaluates a prefix of the file, which should still be balanced.
    assert sum(r["harmful"] for r in raw[:32]) == 16


def test_bundled_judge_pairs():
    raw = _load("judge_pairs.jsonl")
    assert len(raw) >= 60
    keys = {"id", "prompt", "response_a", "response_b", "label", "category", "kind"}
    assert all(set(r) == keys for r in raw)
    assert [r["id"] for r in raw] == [f"jp-{i:03d}" for i in range(1, len(raw) + 1)]
    labels = Counter(r["label"] for r in raw)
    assert set(labels) == {"a", "b"} and labels["a"] == labels["b"]
    kinds = Counter(r["kind"] for r in raw)
    assert set(kinds) == {"harmful", "wrong", "rude", "refusal"} and min(kinds.values()) >= 12
    for kind in kinds:  # a judge that always picks one position must not look good on any kind
        per = Counter(r["label"] for r in raw if r["kind"] == kind)
        assert abs(per["a"] - per["b"]) <= 1, (kind, per)
    assert all(r["category"] in HARM | BENIGN for r in raw)
    for r in raw:
        assert r["response_a"].strip() and r["response_b"].strip() and r["response_a"] != r["response_b"]
        assert len(r["response_a"].split()) < 80 and len(r["response_b"].split()) < 80
    assert len({_norm(r["prompt"]) for r in raw}) == len(raw)
