"""Prompt dedup (`cai generate --dedup exact|near|none`): what must be caught, what must not, in
English, Chinese and Russian; the counts in run.yaml through run_generate and the CLI; decisions
made before any engine starts, deterministic, and the same when a run resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from cai.cli import main
from cai.config import GenerateConfig
from cai.dedup import (EXACT, KEPT, NEAR, SHINGLE, THRESHOLD, Selector, estimated_jaccard, exact_key,
                       near_signature, normalise, shingles, tokens)
from cai.generate import run_generate
from cai.inputs import PromptRow, prompt_key, shard_of
from cai.records import read_rows
from tests.scripted import ScriptedBackend

# A long prompt (62 words) and the same with one word in the middle changed.
TRIP = ("I am planning a two week trip through the north of Portugal in late September with my elderly parents, "
        "and I would like a day by day plan that avoids long drives, steep walks and crowded places, while still "
        "showing them the best local food, a little wine and the history of each town we stay in, with one quiet "
        "afternoon of rest every few days and a hotel that has a lift.")
TRIP_CHANGED = TRIP.replace("late September", "late October")
SKY = "Explain in simple terms why the sky looks blue during the day but turns red and orange at sunset."
ZH_TRIP = ("我下个月要带年迈的父母去云南旅行两个星期，请帮我安排一个详细的行程：每天不需要长时间坐车，不用爬很多台阶，"
           "人不要太多，但又能品尝当地的特色美食，了解每座古城的历史，最好每隔几天安排一个下午休息。")
ZH_TRIP_CHANGED = ZH_TRIP.replace("两个星期", "三个星期")
RU_TRIP = ("Я собираюсь в двухнедельную поездку по северу Португалии в конце сентября вместе с пожилыми родителями "
           "и хотел бы получить подробный план на каждый день без долгих переездов, крутых подъёмов и толп туристов, "
           "но при этом с лучшей местной едой, немного вином и историей каждого города, где мы остановимся, а также "
           "с одним спокойным днём отдыха через каждые несколько дней и гостиницей с лифтом.")
RU_TRIP_CHANGED = RU_TRIP.replace("в конце сентября", "в конце октября")

# Pairs a dedup must call one prompt (the second a copy of the first).
NEAR_COPIES = [
    ("a word changed in a long prompt", TRIP, TRIP_CHANGED),
    ("a prefix 'Please answer:'", SKY, "Please answer: " + SKY),
    ("punctuation and spacing", "What is 2+2?", "what is 2 + 2"),
    ("zh: one character changed in a long prompt", ZH_TRIP, ZH_TRIP_CHANGED),
    ("zh: a polite prefix", ZH_TRIP, "请回答：" + ZH_TRIP),
    ("ru: a word changed in a long prompt", RU_TRIP, RU_TRIP_CHANGED),
    ("ru: a prefix", RU_TRIP, "Пожалуйста, ответь: " + RU_TRIP),
]
# Pairs that are different prompts, however alike.
NEAR_MISSES = [
    ("the same topic in other words", "How do I bake sourdough bread at home?",
     "What is the process for making a sourdough loaf in my own kitchen?"),
    ("a short prompt sharing common words", "How do I make a kite?", "How do I make a cake?"),
    ("one template, two requests", "Write a short poem about the sea at night.",
     "Write a short poem about the mountains in winter."),
    ("the same words in another order", "dog bites man", "man bites dog"),
    ("a long prompt and its short summary", TRIP, "Plan a trip to Portugal for my parents."),
    ("zh: the same topic in other words", ZH_TRIP, "请推荐几条适合老年人的云南旅游路线，节奏慢一点。"),
    ("zh: short prompts sharing a template", "怎么做蛋糕？", "怎么做风筝？"),
    ("ru: the same topic in other words", RU_TRIP, "Посоветуй спокойный маршрут по Португалии для пожилых людей."),
]
# Copies exact dedup catches (normalising case, spacing and Unicode form).
EXACT_COPIES = [
    ("case and spacing", "Tell me a joke about cats.", "  tell me a   JOKE about\tCATS. "),
    ("casefold ß", "Was kostet eine Straße?", "WAS KOSTET EINE STRASSE?"),
    ("zh: full-width forms", "请问，ＡＩ是什么？", "请问,AI是什么?"),
    ("ru: case", "Как приготовить борщ?", "КАК ПРИГОТОВИТЬ БОРЩ?"),
]


def rows_of(texts: list[str]) -> list[PromptRow]:
    return [PromptRow(index=i, messages=[{"role": "user", "content": t}]) for i, t in enumerate(texts)]


def decide(texts: list[str], mode: str = "near") -> list[int]:
    sel = Selector(mode)
    for row in rows_of(texts):
        sel.add(row)
    return list(sel.finish().reasons)


def jaccard(a: str, b: str) -> float:
    sa, sb = set(shingles(tokens(a))), set(shingles(tokens(b)))
    return len(sa & sb) / len(sa | sb)


# ---------------------------------------------------------------- normalising and tokens


def test_normalise_folds_case_spacing_and_unicode_forms():
    assert normalise("  Tell me\ta JOKE\n") == "tell me a joke"
    assert normalise("ＡＢＣ　１２３") == "abc 123"  # full-width letters, digits and space (NFKC)
    assert normalise("Straße") == normalise("STRASSE")  # casefold, not lower()
    assert exact_key([{"role": "user", "content": "Hi  there"}]) == exact_key([{"role": "user", "content": "hi there"}])
    # the role is part of the prompt
    assert exact_key([{"role": "system", "content": "hi"}, {"role": "user", "content": "x"}]) != \
        exact_key([{"role": "user", "content": "hi"}, {"role": "user", "content": "x"}])


def test_tokens_are_words_or_characters_where_words_are_not_spaced():
    assert tokens("Don't PANIC: it's 42!") == ["don't", "panic", "it's", "42"]
    assert tokens("你好，世界") == ["你", "好", "世", "界"]
    assert tokens("iPhone手机") == ["iphone", "手", "机"]
    assert tokens("Привет, мир") == ["привет", "мир"]
    # combining vowel signs stay in their word (Devanagari) or with their letter (Thai)
    assert tokens("नमस्ते दुनिया") == ["नमस्ते", "दुनिया"]
    assert tokens("สวัสดี") == ["ส", "วั", "ส", "ดี"]
    assert shingles(["a", "b"]) == ["a\x1fb"] and len(shingles(list("abcde"))) == 5 - SHINGLE + 1


# ---------------------------------------------------------------- what is caught and what is not


@pytest.mark.parametrize("why,a,b", NEAR_COPIES, ids=[c[0] for c in NEAR_COPIES])
def test_near_copies_are_caught(why, a, b):
    assert jaccard(a, b) >= 0.85, "the test pair itself should be a clear near copy"
    assert estimated_jaccard(near_signature(a), near_signature(b)) >= THRESHOLD
    assert decide([a, b]) == [KEPT, NEAR]
    assert decide([a, b], "exact") == [KEPT, KEPT], "exact dedup leaves a changed text alone"


@pytest.mark.parametrize("why,a,b", NEAR_MISSES, ids=[c[0] for c in NEAR_MISSES])
def test_near_misses_are_kept(why, a, b):
    assert jaccard(a, b) <= 0.6
    assert decide([a, b]) == [KEPT, KEPT]


@pytest.mark.parametrize("why,a,b", EXACT_COPIES, ids=[c[0] for c in EXACT_COPIES])
def test_exact_copies_are_caught_in_both_modes(why, a, b):
    assert decide([a, b], "exact") == [KEPT, EXACT]
    assert decide([a, b], "near") == [KEPT, EXACT]
    assert decide([a, b], "none") == [KEPT, KEPT]


def test_the_first_of_a_set_is_kept_and_each_copy_names_it():
    texts = [TRIP, "Something else entirely, about tea.", TRIP_CHANGED, TRIP.upper(), TRIP]
    sel = Selector("near")
    for row in rows_of(texts):
        sel.add(row)
    s = sel.finish()
    assert list(s.reasons) == [KEPT, KEPT, NEAR, EXACT, EXACT]
    assert (s.exact, s.near, s.identical, s.kept) == (2, 1, 1, 2)
    assert s.skipped == [{"source_row": 2, "kind": "near", "duplicate_of": 0},
                         {"source_row": 3, "kind": "exact", "duplicate_of": 0},
                         {"source_row": 4, "kind": "exact", "duplicate_of": 0}]
    # in the other order the other copy is the one kept: decisions follow the input order only
    assert decide([TRIP_CHANGED, TRIP]) == [KEPT, NEAR]


def test_a_near_duplicate_of_a_left_out_row_is_judged_against_the_kept_ones():
    # TRIP_CHANGED is left out as a copy of TRIP; a copy of TRIP_CHANGED is then compared with the
    # rows that were kept (TRIP), and is a copy of it too.
    twice = TRIP_CHANGED.replace("steep walks", "steep climbs")
    assert decide([TRIP, TRIP_CHANGED, twice]) == [KEPT, NEAR, NEAR]


def test_decisions_are_deterministic_and_one_byte_a_row():
    texts = [f"Question number {i % 40} about the {['sea', 'sky', 'hills'][i % 3]} please" for i in range(300)]
    a, b = Selector("near"), Selector("near")
    for row in rows_of(texts):
        a.add(row)
        b.add(row)
    sa, sb = a.finish(), b.finish()
    assert sa.reasons == sb.reasons and len(sa.reasons) == 300 and sa.digest == sb.digest
    assert sa.exact == 300 - 120  # 40 numbers x 3 topics repeat, lcm 120


def test_ids_of_the_input_name_the_rows():
    rows = [PromptRow(index=i, messages=[{"role": "user", "content": t}], meta={"id": f"p{i}"})
            for i, t in enumerate(["Hello there", "hello   THERE"])]
    sel = Selector("exact")
    for r in rows:
        sel.add(r)
    s = sel.finish(reread=lambda: iter(rows))
    assert s.skipped == [{"source_row": 1, "kind": "exact", "duplicate_of": 0, "id": "p1", "duplicate_of_id": "p0"}]


# ---------------------------------------------------------------- through run_generate and the CLI


def write_prompts(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"prompt": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return path


PROMPTS = ["Tell me a joke about cats.", "  tell me a   JOKE about\tCATS. ", "Tell me a joke about cats.",
           TRIP, TRIP_CHANGED, "What is 2+2?", "what is 2 + 2", ZH_TRIP, ZH_TRIP_CHANGED, "Name three rivers."]


def gen_cfg(tmp_path, **kw) -> GenerateConfig:
    base = dict(prompts=str(write_prompts(tmp_path / "p.jsonl", PROMPTS)), rounds=1, samples=2,
                run_dir=str(tmp_path / "run"), model="scripted-model")
    return GenerateConfig(**{**base, **kw})


def run_yaml(run_dir) -> dict:
    return yaml.safe_load((Path(run_dir) / "run.yaml").read_text(encoding="utf-8"))


def sources(run_dir) -> set[int]:
    return {r["meta"]["source_row"] for r in read_rows(Path(run_dir) / "generations.jsonl")}


def test_exact_dedup_is_the_default_and_recorded_in_run_yaml(tmp_path):
    s = run_generate(gen_cfg(tmp_path), backend=ScriptedBackend(), progress=False)
    assert sources(tmp_path / "run") == {0, 3, 4, 5, 6, 7, 8, 9}
    assert s.written == 8 * 2 and s.duplicates == 1
    dedup = run_yaml(tmp_path / "run")["dedup"]
    assert dedup == {"mode": "exact", "exact": 2, "near": 0, "identical": 1,
                     "skipped": [{"source_row": 1, "kind": "exact", "duplicate_of": 0},
                                 {"source_row": 2, "kind": "exact", "duplicate_of": 0}]}
    assert any(line.startswith("dedup          2 duplicate prompts left out: 2 exact") for line in s.lines())
    # the rerun skips the same prompts and writes nothing
    again = run_generate(gen_cfg(tmp_path), backend=ScriptedBackend(), progress=False)
    assert again.written == 0 and again.skipped == 16 and run_yaml(tmp_path / "run")["dedup"] == dedup


def test_near_and_none(tmp_path):
    run_generate(gen_cfg(tmp_path, dedup="near"), backend=ScriptedBackend(), progress=False)
    assert sources(tmp_path / "run") == {0, 3, 5, 7, 9}
    dedup = run_yaml(tmp_path / "run")["dedup"]
    assert (dedup["exact"], dedup["near"], dedup["threshold"], dedup["shingle"]) == (2, 3, 0.8, 3)
    assert {(e["source_row"], e["duplicate_of"]) for e in dedup["skipped"] if e["kind"] == "near"} == \
        {(4, 3), (6, 5), (8, 7)}
    s = run_generate(gen_cfg(tmp_path, dedup="none", run_dir=str(tmp_path / "none")), backend=ScriptedBackend(),
                     progress=False)
    # identical messages are one record id: written once, as before dedup existed
    assert sources(tmp_path / "none") == set(range(10)) - {2} and s.duplicates == 1
    assert run_yaml(tmp_path / "none")["dedup"] == {"mode": "none"}


def test_dedup_is_decided_before_any_engine_starts(tmp_path, monkeypatch):
    seen = {}

    def load(*a, **k):
        seen["dedup"] = run_yaml(tmp_path / "run").get("dedup")
        return ScriptedBackend()

    monkeypatch.setattr("cai.generate.load_backend", load)
    run_generate(gen_cfg(tmp_path, dedup="near", backend="hf", model=str(_model_dir(tmp_path))), progress=False)
    assert seen["dedup"]["near"] == 3  # on disk before the engine was asked for

    # nothing left to generate (here: the one prompt is the other shard's): no engine at all
    def refuse(*a, **k):
        raise AssertionError("no engine should start")

    monkeypatch.setattr("cai.generate.load_backend", refuse)
    one = write_prompts(tmp_path / "one.jsonl", PROMPTS[:1])
    other = 1 - shard_of(prompt_key([{"role": "user", "content": PROMPTS[0]}]), 2)
    s = run_generate(gen_cfg(tmp_path, prompts=str(one), run_dir=str(tmp_path / "one"), backend="hf",
                             model=str(_model_dir(tmp_path)), shard=f"{other}/2"), progress=False)
    assert s.written == 0 and run_yaml(tmp_path / "one")["shard"] == {"index": other, "count": 2, "prompts": 0}


def test_a_crashed_run_resumes_with_the_same_decisions(tmp_path):
    c = gen_cfg(tmp_path, dedup="near", samples=1)
    with pytest.raises(RuntimeError, match="scripted crash"):
        run_generate(c, backend=ScriptedBackend(fail_after_calls=1), progress=False)
    first = sources(tmp_path / "run")
    assert len(first) < 5
    s = run_generate(c, backend=ScriptedBackend(), progress=False)
    assert sources(tmp_path / "run") == {0, 3, 5, 7, 9} and s.skipped == len(first)
    assert run_yaml(tmp_path / "run")["dedup"]["near"] == 3


def _model_dir(tmp_path) -> Path:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    return model


def test_the_cli_flag(tmp_path, monkeypatch):
    monkeypatch.setattr("cai.generate.load_backend", lambda *a, **k: ScriptedBackend())
    p = write_prompts(tmp_path / "p.jsonl", PROMPTS)
    args = ["generate", "--prompts", str(p), "--model", str(_model_dir(tmp_path)), "--backend", "hf",
            "--rounds", "1", "--no-progress"]
    res = CliRunner().invoke(main, [*args, "--dedup", "near", "--run-dir", str(tmp_path / "near")])
    assert res.exit_code == 0, res.output
    assert "dedup          5 duplicate prompts left out: 2 exact" in res.output
    assert "source row 4 is a near duplicate of row 3; left out" in res.output
    assert run_yaml(tmp_path / "near")["dedup"]["near"] == 3
    assert run_yaml(tmp_path / "near")["config"]["dedup"] == "near"
    res = CliRunner().invoke(main, [*args, "--run-dir", str(tmp_path / "exact")])
    assert res.exit_code == 0 and run_yaml(tmp_path / "exact")["dedup"]["exact"] == 2
    res = CliRunner().invoke(main, [*args, "--dedup", "fuzzy", "--run-dir", str(tmp_path / "bad")])
    assert res.exit_code == 2 and "fuzzy" in res.output
    # a recipe key too
    recipe = tmp_path / "r.yaml"
    recipe.write_text("dedup: none\n")
    res = CliRunner().invoke(main, [*args, "--config", str(recipe), "--run-dir", str(tmp_path / "recipe")])
    assert res.exit_code == 0 and run_yaml(tmp_path / "recipe")["dedup"] == {"mode": "none"}
