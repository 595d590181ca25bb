"""Iterated RLAIF (`cai iterate`): K rounds of generate → judge → train → eval, resumable, as a curve.

Iteration i takes the next slice of the prompt set (disjoint slices in order, wrapping when the
set runs out), answers it with the policy of iteration i-1 (the first: the starting model), has a
judge that stays the same for every iteration label the pairs, trains the policy further with
`method` (DPO or KTO), and evaluates the new policy against the starting model on the same
held-out prompts every time.

DIR/
  iterate.yaml          the settings, and when each iteration started and finished
  iterations/NN/        prompts.jsonl (the slice), run/ (generate + judge), model/, eval/
  history.jsonl         one row per finished iteration (cai/history.py's format plus its own fields)
  curve.png, report.md  the curve and its story

Resume is by step: a run folder resumes as `cai generate`/`cai judge` do, a model folder with its
metrics.json is done, an eval folder with its metrics.json is done, and a finished iteration (a
row in history.jsonl) is never redone.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from cai import history
from cai.atomic import write_atomic
from cai.errors import UsageError
from cai.models import DEFAULT_MODEL

SETTINGS_FILE = "iterate.yaml"
HISTORY = "history.jsonl"
CURVE = "curve.png"
REPORT = "report.md"
STEPS = ("generate", "judge", "train", "eval")


class IterateConfig(BaseModel):
    """`cai iterate`'s settings. `generate`, `judge`, `train` and `eval` hold any further settings of
    those commands (as their recipes and --config files name them)."""

    model_config = ConfigDict(extra="forbid")
    iterations: int = Field(2, ge=1, description="How many iterations to have finished (a rerun may raise it).")
    model: str = Field(DEFAULT_MODEL, description="The starting policy; also the baseline of every eval.")
    constitution: str = Field("default", description="The constitution the critiques, revisions and judge use.")
    prompts: str | None = Field(None, description="Training prompt set; default: the bundled red-team set.")
    per_iteration: int = Field(16, ge=1, description="Prompts per iteration: disjoint slices in order, wrapping.")
    method: Literal["dpo", "kto"] = "dpo"
    strategy: Literal["revision", "samples"] = Field("revision", description="Pairs: revision vs initial answer, "
                                                     "or two sampled answers of the policy.")
    samples: int = Field(2, ge=2, description="Answers sampled per prompt with --strategy samples.")
    rounds: int = Field(1, ge=0, description="Critique → revision rounds (with --strategy revision).")
    reference: Literal["base", "previous"] = Field("base", description="The training reference model: the "
                                                   "starting model, or the previous iteration's policy.")
    eval_prompts: str | None = Field(None, description="Held-out prompts; default: the bundled eval set.")
    eval_limit: int = Field(16, ge=2)
    judge_model: str | None = Field(None, description="The judge of every iteration; default: the starting model.")
    train_steps: int = Field(8, ge=1, description="Optimizer steps per iteration.")
    backend: str | None = Field(None, description="Engine of generation, judging and eval; default: vllm where it imports.")
    seed: int = 0
    out: str = "runs/iterate"
    force_new: bool = False
    generate: dict[str, Any] = Field(default_factory=dict, description="More `cai generate` settings.")
    judge: dict[str, Any] = Field(default_factory=dict, description="More `cai judge` settings (calibration, ...).")
    train: dict[str, Any] = Field(default_factory=dict, description="More training recipe keys (TRL fields, cai:).")
    eval: dict[str, Any] = Field(default_factory=dict, description="More `cai eval` settings (compliance, ...).")

    def identity(self) -> dict:
        """What makes two runs the same series: everything but how many iterations and where."""
        return self.model_dump(exclude={"iterations", "out", "force_new"})

    @property
    def judge_name(self) -> str:
        return self.judge_model or self.model


class Paths:
    def __init__(self, out: Path, i: int):
        self.root = out / "iterations" / f"{i:02d}"
        self.prompts = self.root / "prompts.jsonl"
        self.run = self.root / "run"
        self.model = self.root / "model"
        self.eval = self.root / "eval"


# ---------------------------------------------------------------- settings and state

def _load_state(out: Path) -> dict:
    path = out / SETTINGS_FILE
    if not path.exists():
        return {}
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML ({exc}); it is cai iterate's record, restore it or choose another "
                         "--out") from None


def _save_state(out: Path, state: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / SETTINGS_FILE, yaml.safe_dump(state, sort_keys=False, allow_unicode=True))


def _changed(old: dict, new: dict) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def check_settings(cfg: IterateConfig, out: Path, finished: int, log: Callable[[str], None]) -> dict:
    """The state to carry on with. Other settings than those of the started series are refused
    unless --force-new, which redoes the unfinished iteration with the new ones (finished
    iterations are kept: their history rows record their own settings)."""
    state = _load_state(out)
    ident = cfg.identity()
    if not state:
        return {"settings": ident, "iterations": {}}
    changed = _changed(state.get("settings") or {}, ident)
    if changed:
        if not cfg.force_new:
            raise UsageError(f"{out} holds an iterate run with other settings ({', '.join(changed)} differ); pass "
                             "--force-new to redo its unfinished iteration with these settings (finished iterations "
                             "are kept), or choose another --out")
        unfinished = finished + 1
        folder = Paths(out, unfinished).root
        if folder.exists():
            log(f"iterate: --force-new: iteration {unfinished}'s started steps are removed and redone with the new "
                f"settings ({', '.join(changed)})")
            shutil.rmtree(folder)
        state["iterations"] = {k: v for k, v in (state.get("iterations") or {}).items() if int(k) <= finished}
        state["settings"] = ident
    return state


# ---------------------------------------------------------------- prompts

def prompt_slice(path: str | None, start: int, n: int) -> tuple[list[dict], int, bool]:
    """Rows start .. start+n of the prompt set (by position among its good rows), wrapping at the
    end; returns (rows, the set's size, whether it wrapped)."""
    from cai.inputs import count_prompts, iter_prompts

    total = count_prompts(path)
    if total == 0:
        raise UsageError(f"{path or 'the bundled prompt set'}: no prompts")
    wanted = [(start + k) % total for k in range(n)]
    order = {pos: k for k, pos in enumerate(dict.fromkeys(wanted))}
    picked: dict[int, dict] = {}
    for pos, row in enumerate(iter_prompts(path, on_bad_row="skip")):
        if pos in order:
            picked[pos] = {"prompt": row.messages, **({"category": row.category} if row.category else {}), **row.meta}
    return [picked[pos] for pos in dict.fromkeys(wanted)], total, start + n > total


def write_prompts(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


# ---------------------------------------------------------------- the steps

def _generate(cfg: IterateConfig, policy: str, paths: Paths, progress: bool) -> dict:
    from cai.config import GenerateConfig
    from cai.generate import run_generate

    settings = {"rounds": cfg.rounds if cfg.strategy == "revision" else 0,
                "samples": cfg.samples if cfg.strategy == "samples" else 1, **cfg.generate}
    gcfg = GenerateConfig(model=policy, backend=cfg.backend, constitution=cfg.constitution, prompts=str(paths.prompts),
                          seed=cfg.seed, run_dir=str(paths.run), **settings)
    summary = run_generate(gcfg, progress=progress)
    return {"written": summary.written, "reused": summary.skipped, "rows": summary.rows_total,
            "flag_counts": summary.flag_counts}


def _judge(cfg: IterateConfig, paths: Paths, progress: bool) -> dict:
    from cai.pairs import JudgeRunConfig, run_judge

    settings = JudgeRunConfig(model=cfg.judge_name, backend=cfg.backend, constitution=cfg.constitution,
                              strategy=cfg.strategy, seed=cfg.seed, run_dir=str(paths.run), **cfg.judge)
    summary = run_judge(settings, progress=progress)
    return {"judged": summary.judged, "reused": summary.skipped, "ties": summary.ties,
            "calibration": summary.calibration}


def usable_rows(cfg: IterateConfig, run: Path) -> tuple[int, list[str]]:
    """How many rows `method` would train on from the run folder (flagged and tied pairs left out)."""
    from cai.export import LeftOut, build_rows

    if cfg.method == "dpo" and not (run / "preferences.jsonl").exists():
        return 0, []
    left = LeftOut()
    keep = bool((cfg.train.get("cai") or {}).get("keep_flagged") or cfg.train.get("keep_flagged"))
    rows = build_rows(run, cfg.method, keep_flagged=keep, left_out=left)
    if cfg.method == "kto" and len({r["label"] for r in rows}) < 2:
        return 0, left.lines()
    return len(rows), left.lines()


def _train(cfg: IterateConfig, policy: str, paths: Paths, log: Callable[[str], None]) -> dict:
    from cai.train import run_stage

    overrides = {"max_steps": cfg.train_steps, "seed": cfg.seed}
    if cfg.reference == "base" and policy != cfg.model:
        # With LoRA TRL's own reference is the model it starts from (the adapter switched off):
        # the previous policy. The starting model as reference has to be named.
        overrides["ref_model"] = cfg.model
    flat = {k: v for k, v in cfg.train.items() if k != "cai"}
    overrides.update({**flat, **(cfg.train.get("cai") or {})})
    resume = (paths.model / "checkpoints").is_dir()
    return run_stage(cfg.method, paths.run, policy, paths.model, overrides, resume=resume, log=log)


def _eval(cfg: IterateConfig, policy: str, paths: Paths, progress: bool) -> dict:
    from cai.evaluate import EvalConfig, run_eval

    ecfg = EvalConfig(model=policy, baseline=cfg.model, judge_model=cfg.judge_name, backend=cfg.backend,
                      prompts=cfg.eval_prompts, limit=cfg.eval_limit, out=str(paths.eval), seed=cfg.seed,
                      constitution=cfg.constitution, **cfg.eval)
    return run_eval(ecfg, progress=progress)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


TRAIN_FIGURES = ("steps", "train_runtime_s", "train_rows", "first_loss", "last_loss", "first_reward_margin",
                 "last_reward_margin", "loss_type", "resumed_from")


def run_iterate(cfg: IterateConfig, *, progress: bool = True,
                log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> list[dict]:
    """Run (or resume) the iterations; returns the history rows."""
    out = Path(cfg.out)
    rows = history.read(out / HISTORY)
    finished = len(rows)
    state = check_settings(cfg, out, finished, log)
    _save_state(out, state)
    policy = rows[-1]["policy"] if rows else cfg.model
    if finished >= cfg.iterations:
        log(f"iterate: {finished} iterations already finished in {out} (--iterations {cfg.iterations}): nothing to do")
    for i in range(finished + 1, cfg.iterations + 1):
        paths = Paths(out, i)
        times: dict[str, float] = {}
        tag = f"iterate {i}/{cfg.iterations}"
        state["iterations"].setdefault(str(i), {"started": _now()})
        _save_state(out, state)

        slice_rows, total, wrapped = prompt_slice(cfg.prompts, (i - 1) * cfg.per_iteration, cfg.per_iteration)
        if not paths.prompts.exists():
            write_prompts(paths.prompts, slice_rows)
        start = (i - 1) * cfg.per_iteration % total
        if wrapped:
            log(f"{tag}: the prompt set has {total} prompts; this iteration's slice wraps to its start "
                "(prompts are seen again)")

        t0 = time.perf_counter()
        reuse = (paths.run / "generations.jsonl").exists()
        log(f"{tag} generate: {cfg.per_iteration} prompts from #{start} with {_short(policy)}"
            + ("; resuming the run folder" if reuse else ""))
        gen = _generate(cfg, policy, paths, progress)
        times["generate"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        log(f"{tag} judge: {cfg.strategy} pairs, judge {_short(cfg.judge_name)}"
            + ("; resuming" if (paths.run / "preferences.jsonl").exists() or (paths.run / "ties.jsonl").exists() else ""))
        jud = _judge(cfg, paths, progress)
        times["judge"] = time.perf_counter() - t0

        usable, left_out = usable_rows(cfg, paths.run)
        t0 = time.perf_counter()
        trained = _read_json(paths.model / "metrics.json")
        new_policy = policy
        if usable == 0:
            log(f"{tag} train: no usable {cfg.method} rows (all ties or flagged); training skipped, "
                f"{_short(policy)} carries on")
            trained = None
        elif trained is not None:
            log(f"{tag} train: reusing {paths.model} (finished)")
            new_policy = str(paths.model)
        else:
            log(f"{tag} train: {cfg.method} on {usable} rows, {cfg.train_steps} steps from {_short(policy)}")
            trained = _train(cfg, policy, paths, log)
            new_policy = str(paths.model)
        times["train"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        metrics = _read_json(paths.eval / "metrics.json") if (paths.eval / "metrics.json").exists() else None
        if new_policy == cfg.model:
            log(f"{tag} eval: the policy is still the starting model; nothing to compare")
            metrics = None
        elif new_policy == policy and rows:
            log(f"{tag} eval: the policy did not change; iteration {i - 1}'s figures carry over")
            metrics = _read_json(Path(rows[-1]["eval"]) / "metrics.json") if rows[-1].get("eval") else None
        elif metrics is not None:
            log(f"{tag} eval: reusing {paths.eval} (finished)")
        else:
            log(f"{tag} eval: {_short(new_policy)} vs {_short(cfg.model)} on {cfg.eval_limit} held-out prompts")
            metrics = _eval(cfg, new_policy, paths, progress)
        times["eval"] = time.perf_counter() - t0

        row = {"iteration": i, **(history.headline(metrics) if metrics else _no_eval(cfg)),
               "prompts": {"n": len(slice_rows), "from": start, "set_size": total, "wrapped": wrapped,
                           "file": str(paths.prompts)},
               "pairs": usable, "pairs_judged": _count(paths.run / "preferences.jsonl"), "ties": jud["ties"],
               "left_out": left_out, "generate": {k: gen[k] for k in ("written", "reused", "rows")},
               "train": {k: trained[k] for k in TRAIN_FIGURES if trained and k in trained} if trained else None,
               "method": cfg.method, "reference": cfg.reference, "judge": cfg.judge_name,
               "judge_calibration": _calibration_line(jud.get("calibration")),
               "policy": new_policy, "model": str(paths.model) if trained else None,
               "seconds": {k: round(v, 1) for k, v in times.items()}}
        history.append(out / HISTORY, row)
        rows.append(row)
        state["iterations"][str(i)]["finished"] = _now()
        _save_state(out, state)
        write_outputs(out, rows, cfg)
        log(f"{tag} done: {row_line(row)}")
        policy = new_policy
    if rows:
        write_outputs(out, rows, cfg)
    return rows


def _no_eval(cfg: IterateConfig) -> dict:
    return {"model": cfg.model, "baseline": cfg.model, "date": _now(), "n": 0, "win_rate": None, "win_rate_ci": None,
            "signal": False, "signal_reasons": ["the policy is still the starting model"], "harmlessness": None,
            "over_refusal": None, "compliance": {}, "judge_reliability": {}, "eval": None}


def _calibration_line(cal: dict | None) -> dict | None:
    if not cal:
        return None
    return {k: cal.get(k) for k in ("agreement", "position_consistency", "longer_wins", "n", "below_floor", "source",
                                    "skipped") if k in cal}


def _count(path: Path) -> int:
    from cai.records import read_rows

    return sum(1 for _ in read_rows(path)) if path.exists() else 0


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _short(model: str) -> str:
    p = Path(model)
    return "/".join(p.parts[-3:]) if len(p.parts) > 3 else model


def _f(x) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "n/a"


def row_line(row: dict) -> str:
    lo, hi = row.get("win_rate_ci") or (None, None)
    win = (f"win rate {_f(row.get('win_rate'))} ({_f(lo)}-{_f(hi)})" if row.get("signal", True)
           else f"win rate no signal (measured {_f(row.get('win_rate'))})")
    return (f"pairs {row['pairs']}, ties {row['ties']}, {win}, harmlessness {_f(row.get('harmlessness'))}, "
            f"over-refusal {_f(row.get('over_refusal'))}")


# ---------------------------------------------------------------- curve and report

def write_outputs(out: Path, rows: list[dict], cfg: IterateConfig) -> None:
    history.plot(rows, out / CURVE, x_key="iteration", title=f"cai iterate: {cfg.method} from {_short(cfg.model)}, "
                 f"judge {_short(cfg.judge_name)}")
    write_atomic(out / REPORT, report(rows, cfg))


def report(rows: list[dict], cfg: IterateConfig) -> str:
    cal = next((r["judge_calibration"] for r in rows if r.get("judge_calibration")), None)
    noise = [r["iteration"] for r in rows if not r.get("signal", True)]
    lines = [f"# cai iterate: {len(rows)} of {cfg.iterations} iterations", "",
             f"Starting model `{cfg.model}`, {cfg.method} ({cfg.strategy} pairs, reference: {cfg.reference}), "
             f"{cfg.per_iteration} new prompts and {cfg.train_steps} steps per iteration; the judge "
             f"`{cfg.judge_name}` is the same for every iteration, and every eval compares the iteration's policy "
             f"with the starting model on the same {cfg.eval_limit} held-out prompts.", ""]
    if cal and not cal.get("skipped"):
        lines += [f"Judge calibration (measured once, carried into every iteration): agreement "
                  f"{_f(cal.get('agreement'))} on {cal.get('n')} labelled pairs"
                  + (" — **below the floor: its labels, and so the pairs and win rates, are close to chance**"
                     if cal.get("below_floor") else "") + ".", ""]
    if noise:
        lines += [f"**No signal** in iteration(s) {', '.join(map(str, noise))}: those win rates are noise, not a "
                  "finding (see each row's reasons in history.jsonl).", ""]
    lines += ["| iteration | prompts | pairs | ties | train loss | win rate vs start (95% CI) | signal | harmlessness | "
              "over-refusal | time (gen/judge/train/eval s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r.get("train") or {}
        loss = f"{_f(t.get('first_loss'))} → {_f(t.get('last_loss'))}" if t else "skipped"
        lo, hi = r.get("win_rate_ci") or (None, None)
        secs = r.get("seconds") or {}
        lines.append(f"| {r['iteration']} | {r['prompts']['n']} from #{r['prompts']['from']} | {r['pairs']} | "
                     f"{r['ties']} | {loss} | {_f(r.get('win_rate'))} ({_f(lo)}-{_f(hi)}) | "
                     f"{'yes' if r.get('signal', True) else 'no'} | {_f(r.get('harmlessness'))} | "
                     f"{_f(r.get('over_refusal'))} | {'/'.join(f'{secs.get(s, 0):.0f}' for s in STEPS)} |")
    lines += ["", f"![win rate, harmlessness and over-refusal by iteration]({CURVE})", "",
              "Each iteration's run folder, model and eval are under `iterations/NN/`."]
    return "\n".join(lines) + "\n"
