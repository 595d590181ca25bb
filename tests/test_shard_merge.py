"""Sharding (`cai generate --shard I/N`) and `cai merge`: four shards generated separately and
merged equal one unsharded run row for row; a killed shard resumes to the same rows; folders made
differently, or an incomplete set of shards, are refused with exit 2 naming what differs; the
merged folder is a run folder every stage reads."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from cai.cli import main
from cai.commands.merge import shard_option
from cai.config import GenerateConfig
from cai.errors import UsageError
from cai.generate import run_generate
from cai.inputs import Shard, in_shard, parse_shard, prompt_key
from cai.merge import merge_runs
from cai.records import read_rows
from tests.scripted import ScriptedBackend

TOPICS = ["bread", "rivers", "chess", "tax forms", "knots", "bees", "rain", "glass", "maps", "tea", "ships",
          "clocks", "salt", "moss", "owls", "wool", "iron", "kites"]
PROMPTS = [f"Tell me one surprising fact about {t}, and say where it comes from." for t in TOPICS] + [
    "TELL ME ONE SURPRISING FACT ABOUT BREAD, AND SAY WHERE IT COMES FROM.",  # exact copy of row 0
    "Tell me one surprising fact about bread - and say where it comes from!",  # near copy of row 0
    "Tell me one surprising fact about owls,   and say where it comes from.",  # exact copy of row 14
    "为什么猫喜欢晒太阳？请用三句话回答。",
]
SAME = ("id", "prompt", "sample", "initial", "final", "rounds", "flags", "initial_flags", "category")


@pytest.fixture
def prompts(tmp_path) -> Path:
    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps({"prompt": t}, ensure_ascii=False) + "\n" for t in PROMPTS), encoding="utf-8")
    return p


def gen(prompts, run_dir, *, backend=None, **kw):
    cfg = GenerateConfig(prompts=str(prompts), rounds=1, samples=2, run_dir=str(run_dir), model="scripted-model",
                         dedup="near", **kw)
    return run_generate(cfg, backend=backend or ScriptedBackend(), progress=False)


def rows(run_dir) -> list[dict]:
    return list(read_rows(Path(run_dir) / "generations.jsonl"))


def by_id(run_dir) -> dict[str, tuple]:
    return {r["id"]: (tuple(json.dumps(r.get(k), sort_keys=True) for k in SAME), r["meta"]["source_row"])
            for r in rows(run_dir)}


def run_yaml(run_dir) -> dict:
    return yaml.safe_load((Path(run_dir) / "run.yaml").read_text(encoding="utf-8"))


def test_shards_split_by_a_stable_hash():
    keys = [f"row-{i}" for i in range(2000)]
    owners = [[s for s in range(4) if in_shard(k, s, 4)] for k in keys]
    assert all(len(o) == 1 for o in owners)  # every row in exactly one shard
    sizes = Counter(o[0] for o in owners)
    assert all(420 <= sizes[s] <= 580 for s in range(4)), sizes
    assert in_shard("x", 0, 1) and Shard(2, 4).takes(keys[0]) == in_shard(keys[0], 2, 4)
    assert parse_shard("3/4") == Shard(3, 4) and str(parse_shard(" 0/2 ")) == "0/2"
    assert parse_shard({"index": 1, "count": 2}) == Shard(1, 2) and parse_shard(None) is None
    for bad in ("4/4", "-1/4", "1/0", "1", "a/b", "1/2/3"):
        with pytest.raises(UsageError, match="--shard"):
            parse_shard(bad)


def test_the_shard_option_helper():
    @click.command()
    @shard_option()
    def cmd(shard):
        click.echo(repr(shard))

    assert CliRunner().invoke(cmd, ["--shard", "1/3"]).output.strip() == "Shard(index=1, count=3)"
    assert CliRunner().invoke(cmd, []).output.strip() == "None"
    res = CliRunner().invoke(cmd, ["--shard", "3/3"])
    assert res.exit_code == 2 and "I must be 0..N-1" in res.output


def test_four_shards_merged_equal_one_unsharded_run(tmp_path, prompts):
    whole = gen(prompts, tmp_path / "whole")
    for i in range(4):
        s = gen(prompts, tmp_path / f"shard-{i}", shard=f"{i}/4")
        assert s.selection.shard == Shard(i, 4)
        assert f"shard          {i}/4: {s.selection.kept} of the {whole.selection.kept} prompts left" in "\n".join(s.lines())
    shards = [by_id(tmp_path / f"shard-{i}") for i in range(4)]
    assert sum(len(s) for s in shards) == len(by_id(tmp_path / "whole"))  # disjoint, nothing lost
    for i in range(4):
        info = run_yaml(tmp_path / f"shard-{i}")
        assert info["shard"]["index"] == i and info["shard"]["count"] == 4
        # dedup was decided on the whole set: every shard records the same decisions
        assert info["dedup"] == run_yaml(tmp_path / "whole")["dedup"]
        assert info["dedup"]["exact"] == 2 and info["dedup"]["near"] == 1
    assert sum(run_yaml(tmp_path / f"shard-{i}")["shard"]["prompts"] for i in range(4)) == whole.selection.kept

    res = CliRunner().invoke(main, ["merge", *(str(tmp_path / f"shard-{i}") for i in (2, 0, 3, 1)),
                                    "--out", str(tmp_path / "all")])
    assert res.exit_code == 0, res.output
    assert "merged         4 folders (0/4, 1/4, 2/4, 3/4)" in res.output
    assert by_id(tmp_path / "all") == by_id(tmp_path / "whole")  # the same ids and texts
    merged = rows(tmp_path / "all")
    assert [(r["meta"]["source_row"], r["sample"]) for r in merged] == \
        sorted((r["meta"]["source_row"], r["sample"]) for r in merged)  # in input order
    info, one = run_yaml(tmp_path / "all"), run_yaml(tmp_path / "whole")
    assert "shard" not in info and info["config"]["shard"] is None
    assert [m["shard"] for m in info["merged_from"]] == [{"index": i, "count": 4} for i in range(4)]
    assert info["flag_counts"] == one["flag_counts"] and info["identity_hash"] == one["identity_hash"]
    assert info["config"]["run_dir"] == str(tmp_path / "all")

    # a run folder like any other: generate resumes it (nothing left), judge, export and view read it
    again = gen(prompts, tmp_path / "all")
    assert again.written == 0 and again.skipped == len(merged)
    from cai.export import build_rows
    from cai.pairs import JudgeRunConfig, run_judge

    assert len(build_rows(tmp_path / "all", "sft", keep_flagged=True)[0]) == \
        len(build_rows(tmp_path / "whole", "sft", keep_flagged=True)[0])
    j = run_judge(JudgeRunConfig(run_dir=str(tmp_path / "all"), calibration="none"), backend=ScriptedBackend(),
                  progress=False, log=lambda s: None)
    assert j.judged == len(merged)
    res = CliRunner().invoke(main, ["view", str(tmp_path / "all")])
    assert res.exit_code == 0, res.output


def test_a_killed_shard_resumes_to_the_same_rows(tmp_path, prompts):
    gen(prompts, tmp_path / "fresh", shard="1/4")
    with pytest.raises(RuntimeError, match="scripted crash"):
        gen(prompts, tmp_path / "killed", shard="1/4", chunk_size=1, backend=ScriptedBackend(fail_after_calls=4))
    partial = rows(tmp_path / "killed")
    assert 0 < len(partial) < len(rows(tmp_path / "fresh"))
    for i in (0, 2, 3):
        gen(prompts, tmp_path / f"shard-{i}", shard=f"{i}/4")
    # merging before the resume: the shard's run.yaml says how many prompts it has, so the merge warns
    res = CliRunner().invoke(main, ["merge", *(str(tmp_path / f"shard-{i}") for i in (0, 2, 3)),
                                    str(tmp_path / "killed"), "--out", str(tmp_path / "early")])
    assert res.exit_code == 0, res.output
    assert "shard 1/4" in res.output and "has not finished" in res.output
    s = gen(prompts, tmp_path / "killed", shard="1/4")  # the rerun
    assert s.skipped == len(partial) and s.written == len(rows(tmp_path / "fresh")) - len(partial)
    assert by_id(tmp_path / "killed") == by_id(tmp_path / "fresh")
    # resumed as another shard: refused, the folder holds shard 1's rows
    with pytest.raises(UsageError, match="different setup.*shard"):
        gen(prompts, tmp_path / "killed", shard="2/4")


def test_folders_made_differently_are_refused_naming_the_keys(tmp_path, prompts):
    for i in range(3):
        gen(prompts, tmp_path / f"s{i}", shard=f"{i}/4")
    run_generate(GenerateConfig(prompts=str(prompts), rounds=2, samples=2, run_dir=str(tmp_path / "rounds"),
                                model="scripted-model", dedup="near", shard="3/4"), backend=ScriptedBackend(),
                 progress=False)
    res = CliRunner().invoke(main, ["merge", *(str(tmp_path / f"s{i}") for i in range(3)), str(tmp_path / "rounds"),
                                    "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert f"{tmp_path / 'rounds'} differs from {tmp_path / 's0'} in config.rounds (1 vs 2)" in res.output
    assert "identity_hash" in res.output and not (tmp_path / "out" / "generations.jsonl").exists()

    other = tmp_path / "bank.yaml"
    shutil.copy(Path(__file__).resolve().parent.parent / "constitutions" / "bank.yaml", other)
    run_generate(GenerateConfig(prompts=str(prompts), rounds=1, samples=2, run_dir=str(tmp_path / "const"),
                                model="scripted-model", dedup="near", shard="3/4", constitution=str(other)),
                 backend=ScriptedBackend(), progress=False)
    res = CliRunner().invoke(main, ["merge", *(str(tmp_path / f"s{i}") for i in range(3)), str(tmp_path / "const"),
                                    "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "constitution_sha256" in res.output and "config.constitution" in res.output

    # other dedup: other decisions, so the shards would not add up to one run
    gen_exact = run_generate(GenerateConfig(prompts=str(prompts), rounds=1, samples=2, run_dir=str(tmp_path / "ex"),
                                            model="scripted-model", dedup="exact", shard="3/4"),
                             backend=ScriptedBackend(), progress=False)
    assert gen_exact.selection.near == 0
    res = CliRunner().invoke(main, ["merge", str(tmp_path / "s0"), str(tmp_path / "ex"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "config.dedup ('near' vs 'exact')" in res.output and "dedup.near" in res.output


def test_missing_repeated_and_unsharded_folders(tmp_path, prompts):
    for i in range(3):
        gen(prompts, tmp_path / f"s{i}", shard=f"{i}/4")
    three = [str(tmp_path / f"s{i}") for i in range(3)]
    res = CliRunner().invoke(main, ["merge", *three, "--out", str(tmp_path / "out")])
    assert res.exit_code == 2 and "shards 3/4 missing (of 4)" in res.output and "--allow-partial" in res.output
    res = CliRunner().invoke(main, ["merge", *three, three[0] + "/", "--out", str(tmp_path / "o2")])
    assert res.exit_code == 2 and "the same shard given twice: 0/4" in res.output
    gen(prompts, tmp_path / "whole")
    res = CliRunner().invoke(main, ["merge", *three, str(tmp_path / "whole"), "--out", str(tmp_path / "o3")])
    assert res.exit_code == 2 and "not a shard" in res.output
    gen(prompts, tmp_path / "half", shard="1/2")
    res = CliRunner().invoke(main, ["merge", three[0], str(tmp_path / "half"), "--out", str(tmp_path / "o4")])
    assert res.exit_code == 2 and "shards of different N" in res.output
    res = CliRunner().invoke(main, ["merge", *three, "--out", three[0]])
    assert res.exit_code == 2 and "one of the folders to merge" in res.output

    res = CliRunner().invoke(main, ["merge", *three, "--allow-partial", "--out", str(tmp_path / "part")])
    assert res.exit_code == 0, res.output
    assert "partial        shards 3/4 missing" in res.output
    assert run_yaml(tmp_path / "part")["merged_missing"] == ["3/4"]
    res = CliRunner().invoke(main, ["merge", *three, "--allow-partial", "--out", str(tmp_path / "part")])
    assert res.exit_code == 2 and "already holds generations.jsonl" in res.output
    # the same settings on the merged folder generate the missing shard's prompts
    s = gen(prompts, tmp_path / "part")
    assert s.written == len(rows(tmp_path / "whole")) - s.skipped
    assert by_id(tmp_path / "part") == by_id(tmp_path / "whole")


def test_judge_shards_of_one_merged_run(tmp_path, prompts):
    """`cai judge --shard I/N` on copies of one run, each recording judge.shard: merged, every
    generation once and the preferences of all copies."""
    gen(prompts, tmp_path / "run")
    gens = rows(tmp_path / "run")
    for i in range(2):
        copy = tmp_path / f"judge-{i}"
        shutil.copytree(tmp_path / "run", copy)
        info = run_yaml(copy)
        info["judge"] = {"judge_model": "j", "strategy": "revision", "shard": {"index": i, "count": 2}}
        (copy / "run.yaml").write_text(yaml.safe_dump(info, sort_keys=False, allow_unicode=True))
        mine = [g for g in gens if in_shard(g["id"], i, 2)]
        (copy / "preferences.jsonl").write_text("".join(json.dumps({"id": "pref-" + g["id"]}) + "\n" for g in mine))
    summary = merge_runs([tmp_path / "judge-0", tmp_path / "judge-1"], tmp_path / "judged", log=lambda s: None)
    assert summary.rows == len(gens) and summary.preferences == len(gens) and summary.duplicates == 0
    assert run_yaml(tmp_path / "judged")["judge"] == {"judge_model": "j", "strategy": "revision"}
    assert {r["id"] for r in read_rows(tmp_path / "judged" / "preferences.jsonl")} == {"pref-" + g["id"] for g in gens}


def test_the_prompt_key_does_not_depend_on_the_settings(tmp_path, prompts):
    a = gen(prompts, tmp_path / "a", shard="0/2")
    b = run_generate(GenerateConfig(prompts=str(prompts), rounds=0, samples=1, run_dir=str(tmp_path / "b"),
                                    model="another", dedup="near", shard="0/2"), backend=ScriptedBackend(),
                     progress=False)
    assert {r["meta"]["source_row"] for r in rows(tmp_path / "a")} == {r["meta"]["source_row"] for r in rows(tmp_path / "b")}
    assert a.selection.reasons == b.selection.reasons
    first = [{"role": "user", "content": PROMPTS[0]}]
    assert (a.selection.reasons[0] == 0) == in_shard(prompt_key(first), 0, 2)


def test_judge_shards_cover_every_pair_once_and_merge(tmp_path):
    """`cai judge --shard I/N` on copies of one run: every pair judged by exactly one shard, and the
    shards' folders merge into the run judged whole."""
    import json
    import shutil

    from cai.constitution import load_constitution
    from cai.generate import GenerateConfig, run_generate
    from cai.inputs import Shard
    from cai.judge import Judge
    from cai.merge import merge_runs
    from cai.pairs import judge_run
    from cai.records import read_rows
    from tests.scripted import ScriptedBackend

    p = tmp_path / "p.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"Question {i}?"}) + "\n" for i in range(12)))
    whole = tmp_path / "whole"
    run_generate(GenerateConfig(prompts=str(p), rounds=1, run_dir=str(whole), model="m"), backend=ScriptedBackend(),
                 progress=False)
    parts = []
    for i in range(3):
        part = tmp_path / f"judge-{i}"
        shutil.copytree(whole, part)
        s = judge_run(part, Judge(ScriptedBackend(prefer="GOOD"), load_constitution("default")), "revision",
                      progress=False, shard=Shard(i, 3))
        parts.append(part)
        assert s.judged == len(list(read_rows(part / "preferences.jsonl"))) + len(list(read_rows(part / "ties.jsonl")))
    judge_run(whole, Judge(ScriptedBackend(prefer="GOOD"), load_constitution("default")), "revision", progress=False)
    ids = [r["id"] for part in parts for r in read_rows(part / "preferences.jsonl")]
    assert sorted(ids) == sorted(r["id"] for r in read_rows(whole / "preferences.jsonl")) and len(set(ids)) == 12
    merged = tmp_path / "merged"
    merge_runs(parts, merged)
    assert sorted(r["id"] for r in read_rows(merged / "preferences.jsonl")) == sorted(ids)
