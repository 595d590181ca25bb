"""`cai export`: SFT/DPO data in the shapes TRL and `datasets` read, with a dataset card."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from cai.cli import main
from cai.config import GenerateConfig
from cai.constitution import load_constitution
from cai.generate import run_generate
from cai.judge import Judge
from cai.pairs import judge_run
from tests.scripted import ScriptedBackend


@pytest.fixture
def run_dir(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"Question number {i}?", "category": "helpful"}) + "\n" for i in range(8)))
    run = tmp_path / "run"
    run_generate(GenerateConfig(prompts=str(p), rounds=2, run_dir=str(run), model="m"), backend=ScriptedBackend(), progress=False)
    judge_run(run, Judge(ScriptedBackend(prefer="GOOD"), load_constitution("default")), "revision", progress=False)
    return run


@pytest.mark.parametrize("to", ["jsonl", "parquet", "hf"])
@pytest.mark.parametrize("fmt", ["sft", "dpo"])
def test_export_loads_with_datasets(run_dir, tmp_path, fmt, to):
    from datasets import Dataset, load_dataset, load_from_disk

    out = tmp_path / "exp" / (f"{fmt}.{to}" if to != "hf" else f"{fmt}_hf")
    res = CliRunner().invoke(main, ["export", str(run_dir), "--format", fmt, "--to", to, "--out", str(out)])
    assert res.exit_code == 0, res.output
    if to == "hf":
        ds = load_from_disk(str(out))
        card = out / "README.md"
    else:
        ds = load_dataset("json" if to == "jsonl" else "parquet", data_files=str(out), split="train")
        card = out.parent / "README.md"
    assert isinstance(ds, Dataset) and len(ds) == 8
    row = ds[0]
    if fmt == "sft":
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["messages"][-1]["content"].startswith("GOOD revision")
    else:
        assert row["prompt"][-1]["role"] == "user"
        assert row["chosen"] == [{"role": "assistant", "content": row["chosen"][0]["content"]}]
        assert row["chosen"][0]["content"] != row["rejected"][0]["content"]
        assert row["p_chosen"] > 0.5 and row["source_ids"]
    text = card.read_text()
    assert "constitution" in text and load_constitution("default").sha256() in text and "rows | 8" in text
    # provenance columns, so training on the exported file alone still knows the constitution
    assert row["constitution"] == "default" and row["constitution_sha256"] == load_constitution("default").sha256()


def test_all_rounds(run_dir, tmp_path):
    out = tmp_path / "sft.jsonl"
    res = CliRunner().invoke(main, ["export", str(run_dir), "--format", "sft", "--out", str(out), "--all-rounds",
                                    "--keep-duplicates"])
    assert res.exit_code == 0
    assert len(out.read_text().splitlines()) == 16
    # the scripted reviser writes the same revision in both rounds: without --keep-duplicates the
    # second round of each row repeats the first and is left out, and counted
    res = CliRunner().invoke(main, ["export", str(run_dir), "--format", "sft", "--out", str(out), "--all-rounds"])
    assert res.exit_code == 0 and len(out.read_text().splitlines()) == 8
    assert "8 left out: the chosen text duplicates an earlier row's" in res.output


def _collapsed_run(tmp_path, n: int = 6):
    """A run whose policy collapsed: every revision is the same refusal, whatever the prompt."""
    from cai.records import GenerationRecord, RunFolder

    run = tmp_path / "collapsed"
    gens = []
    for i in range(n):
        final = "I can't help with that." if i % 3 else f"Here is a real answer number {i}."
        gens.append(GenerationRecord(id=f"g{i}", prompt=[{"role": "user", "content": f"q{i}"}], initial=f"draft {i}",
                                     final=final if i != 4 else "  i CAN'T help   with that. ", rounds=[]))
    RunFolder(run).path.mkdir(parents=True)
    (run / "run.yaml").write_text("model: m\n")
    (run / "generations.jsonl").write_text("".join(g.model_dump_json() + "\n" for g in gens))
    return run


def test_export_leaves_out_answers_that_repeat_an_earlier_one(tmp_path):
    from cai.export import export as do_export

    run = _collapsed_run(tmp_path)
    stats = do_export(run, "sft", "jsonl", tmp_path / "o" / "sft.jsonl")
    texts = [json.loads(x)["messages"][-1]["content"] for x in (tmp_path / "o" / "sft.jsonl").read_text().splitlines()]
    # rows 1, 2, 4 and 5 refuse in the same words (row 4 with other case and spacing): the first is kept
    assert texts == ["Here is a real answer number 0.", "I can't help with that.", "Here is a real answer number 3."]
    assert stats["left_out"].duplicates == 3 and stats["rows"] == 3
    card = (tmp_path / "o" / "README.md").read_text()
    assert "3 left out: the chosen text duplicates an earlier row's" in card
    kept = do_export(run, "sft", "jsonl", tmp_path / "k" / "sft.jsonl", keep_duplicates=True)
    assert kept["rows"] == 6 and "kept (--keep-duplicates)" in (tmp_path / "k" / "README.md").read_text()


def test_all_rounds_keeps_generations_without_rounds(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"Question {i}?"}) + "\n" for i in range(3)))
    run = tmp_path / "run"
    run_generate(GenerateConfig(prompts=str(p), rounds=0, run_dir=str(run), model="m"), backend=ScriptedBackend(), progress=False)
    from cai.export import build_rows

    rows = build_rows(run, "sft", all_rounds=True)
    assert len(rows) == 3 and len({r["id"] for r in rows}) == 3
    assert all(r["round"] == 0 and r["messages"][-1]["content"].startswith("answer 0") for r in rows)


def _card_sections(text: str) -> list[str]:
    return [line.split()[2] for line in text.splitlines() if line.startswith("<!-- cai:section ")]


def test_sft_and_dpo_in_one_folder_share_one_card(run_dir, tmp_path):
    from cai.export import export

    data = tmp_path / "data"
    export(run_dir, "sft", "jsonl", data / "sft.jsonl")
    export(run_dir, "dpo", "jsonl", data / "dpo.jsonl")
    text = (data / "README.md").read_text()
    assert _card_sections(text) == ["sft.jsonl", "dpo.jsonl"]
    assert "cai SFT dataset" in text and "cai DPO dataset" in text
    # exporting again replaces that file's section, never duplicates it
    stats = export(run_dir, "sft", "jsonl", data / "sft.jsonl", all_rounds=True)
    text = (data / "README.md").read_text()
    assert _card_sections(text) == ["sft.jsonl", "dpo.jsonl"] and "one per revision round" in text
    assert stats["card"] == str(data / "README.md") and not list(data.glob("*.README.md"))


def test_export_never_overwrites_a_readme_it_did_not_write(run_dir, tmp_path):
    data = tmp_path / "mine"
    data.mkdir()
    mine = "# My project\n\nHand-written notes.\n"
    (data / "README.md").write_text(mine)
    for fmt in ("sft", "dpo"):
        res = CliRunner().invoke(main, ["export", str(run_dir), "--format", fmt, "--out", str(data / f"{fmt}.jsonl")])
        assert res.exit_code == 0, res.output
        assert f"{fmt}.jsonl.README.md" in res.output and "not a cai card" in res.output
    assert (data / "README.md").read_text() == mine
    for fmt in ("sft", "dpo"):
        side = (data / f"{fmt}.jsonl.README.md").read_text()
        assert _card_sections(side) == [f"{fmt}.jsonl"] and "rows | 8" in side
    # the sidecar card is cai's own: a second export updates it in place
    CliRunner().invoke(main, ["export", str(run_dir), "--format", "sft", "--out", str(data / "sft.jsonl")])
    assert _card_sections((data / "sft.jsonl.README.md").read_text()) == ["sft.jsonl"]


def test_merge_card_is_pure_and_refuses_foreign_text():
    from cai.export import CARD_MARKER, merge_card

    one = merge_card(None, "a.jsonl", "## a\nfirst\n")
    assert one.startswith(CARD_MARKER) and _card_sections(one) == ["a.jsonl"]
    two = merge_card(one, "b.jsonl", "## b\n")
    again = merge_card(two, "a.jsonl", "## a\nsecond\n")
    assert _card_sections(again) == ["a.jsonl", "b.jsonl"] and "second" in again and "first" not in again
    assert merge_card("# someone's readme\n", "a.jsonl", "## a\n") is None


def test_export_dpo_before_judge_is_a_usage_error(tmp_path):
    (tmp_path / "run").mkdir()
    res = CliRunner().invoke(main, ["export", str(tmp_path / "run"), "--format", "dpo", "--out", str(tmp_path / "x.jsonl")])
    assert res.exit_code == 2 and "cai judge" in res.output


@pytest.mark.slow
def test_trl_runs_one_step_on_each_export(run_dir, tmp_path, model_path):
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    from cai.export import export

    sft = export(run_dir, "sft", "jsonl", tmp_path / "sft.jsonl")
    dpo = export(run_dir, "dpo", "parquet", tmp_path / "dpo.parquet")
    tok = AutoTokenizer.from_pretrained(model_path)
    lora = LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM")
    common = dict(max_steps=1, per_device_train_batch_size=2, use_cpu=True, report_to=[], save_strategy="no",
                  logging_steps=1)
    ds = load_dataset("json", data_files=sft["path"], split="train")
    t = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model_path), processing_class=tok, train_dataset=ds,
                   args=SFTConfig(output_dir=str(tmp_path / "o1"), max_length=128, **common), peft_config=lora)
    assert t.train().global_step == 1
    ds = load_dataset("parquet", data_files=dpo["path"], split="train")
    t = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(model_path), processing_class=tok, train_dataset=ds,
                   args=DPOConfig(output_dir=str(tmp_path / "o2"), max_length=128, **common), peft_config=lora)
    assert t.train().global_step == 1


def test_min_confidence_keeps_only_pairs_the_judge_was_sure_of(tmp_path):
    from cai.export import export as do_export
    from cai.records import PreferenceRecord

    run = _collapsed_run(tmp_path)
    prefs = [PreferenceRecord(id=f"p{i}", prompt=[{"role": "user", "content": f"q{i}"}], chosen=f"good {i}",
                              rejected=f"bad {i}", p_chosen=p, judgements=[], strategy="revision", source_ids=[f"g{i}"],
                              chosen_flags=[], rejected_flags=[])
             for i, p in enumerate([0.55, 0.6, 0.7, 0.95, 0.56])]
    (run / "preferences.jsonl").write_text("".join(p.model_dump_json() + "\n" for p in prefs))
    res = CliRunner().invoke(main, ["export", str(run), "--format", "dpo", "--out", str(tmp_path / "d.jsonl"),
                                    "--min-confidence", "0.1"])
    assert res.exit_code == 0, res.output
    kept = [json.loads(x)["p_chosen"] for x in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert kept == [0.6, 0.7, 0.95]
    assert "3 left out" not in res.output and "2 left out: the judge's confidence" in res.output
    card = (tmp_path / "README.md").read_text()
    assert "pairs with abs(p_chosen - 0.5) < 0.1 left out: 2" in card
    stats = do_export(run, "kto", "jsonl", tmp_path / "k.jsonl", min_confidence=0.3)
    assert stats["rows"] == 2 and stats["left_out"].unconfident == 4  # the 0.95 pair, as two rows
    res = CliRunner().invoke(main, ["export", str(run), "--format", "sft", "--out", str(tmp_path / "s.jsonl"),
                                    "--min-confidence", "0.1"])
    assert res.exit_code == 2 and "--min-confidence applies to judged pairs" in res.output


def test_export_decontaminate_leaves_out_training_prompts_that_are_eval_prompts(tmp_path):
    run = _collapsed_run(tmp_path)
    evals = tmp_path / "eval.jsonl"
    # q1 as an eval prompt in other case and spacing; an unrelated prompt that matches nothing
    evals.write_text(json.dumps({"prompt": "  Q1 "}) + "\n" + json.dumps({"prompt": "How do tides work?"}) + "\n")
    res = CliRunner().invoke(main, ["export", str(run), "--format", "sft", "--out", str(tmp_path / "s.jsonl"),
                                    "--keep-duplicates", "--decontaminate", str(evals)])
    assert res.exit_code == 0, res.output
    prompts = [json.loads(x)["messages"][0]["content"] for x in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert "q1" not in prompts and len(prompts) == 5
    assert "1 left out: the prompt overlaps an evaluation prompt (--decontaminate; g1)" in res.output
    assert "decontaminated against" in (tmp_path / "README.md").read_text()
