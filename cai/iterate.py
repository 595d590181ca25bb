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

Every section (generate:, judge:, train:, eval:) is built and checked before anything runs: an
unknown key, a key the top-level settings already set (generate: seed beside seed) or a bad value
is a UsageError naming the section and the key, before any engine or folder.

Resume is by step, each step keyed on the settings it depends on (recorded per iteration in
iterate.yaml, `steps:`): generate on the slice, the policy and the generate settings; judge on the
generation and the judge settings; train on the pairs and the training settings; eval on the model
and the eval settings. A rerun reuses every finished step whose settings are the same and redoes
the first changed one and every step after it (a run folder resumes as `cai generate`/`cai judge`
do). A finished iteration (a row in history.jsonl) is never redone; --force-new redoes the
unfinished one from scratch.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cai import history
from cai.atomic import write_atomic
from cai.errors import UsageError
from cai.judge.figures import fmt
from cai.models import DEFAULT_MODEL

SETTINGS_FILE = "iterate.yaml"
HISTORY = "history.jsonl"
CURVE = "curve.png"
REPORT = "report.md"
STEPS = ("generate", "judge", "train", "eval")


class IterateConfig(BaseModel):
    """`cai iterate`'s settings. `generate`, `judge`, `train` and `eval` hold any further settings of
    those commands (as their recipes and --config files name them), checked by `check_sections` before
    anything runs; a key cai iterate sets itself (FROM_TOP, SET_HERE: generate: seed beside `seed`)
    is refused there."""

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
    decontaminate: list[str] = Field(default_factory=list, description="More prompt sets no training prompt may "
                                     "overlap; the eval prompts are always among them.")
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


# ---------------------------------------------------------------- the sections, checked before anything runs

# Settings of a step that cai iterate passes from a top-level setting: the same key in the step's
# section would be two values for one setting (refused, naming both).
FROM_TOP: dict[str, dict[str, str]] = {
    "generate": {"backend": "backend", "constitution": "constitution", "seed": "seed", "rounds": "rounds",
                 "samples": "samples", "decontaminate": "decontaminate"},
    "judge": {"model": "judge_model", "backend": "backend", "constitution": "constitution", "strategy": "strategy",
              "seed": "seed"},
    "train": {"max_steps": "train_steps", "num_train_epochs": "train_steps", "seed": "seed", "ref_model": "reference"},
    "eval": {"baseline": "model", "judge_model": "judge_model", "backend": "backend", "prompts": "eval_prompts",
             "limit": "eval_limit", "seed": "seed", "constitution": "constitution"},
}
# Settings cai iterate sets itself for every iteration.
SET_HERE: dict[str, dict[str, str]] = {
    "generate": {"model": "the iteration's policy: `model`, then the last iteration's trained model",
                 "prompts": "the iteration's slice of `prompts`", "run_dir": "iterations/NN/run",
                 "force_new": "--force-new"},
    "judge": {"run_dir": "iterations/NN/run", "pairs": "the iteration's run folder",
              "out": "the iteration's run folder", "force_new": "--force-new"},
    "train": {"output_dir": "iterations/NN/model", "resume_from_checkpoint": "iterations/NN/model/checkpoints"},
    "eval": {"model": "the iteration's trained policy", "out": "iterations/NN/eval"},
}
COMMANDS = {"generate": "`cai generate`", "judge": "`cai judge`", "eval": "`cai eval`"}


def _taken(section: str, key: str, label: str | None = None) -> str | None:
    """The problem with `key` in `section` when cai iterate sets it already, else None."""
    label = label or key
    if key in FROM_TOP[section]:
        top = FROM_TOP[section][key]
        return (f"{section}: {label}: clashes with the top-level `{top}`, which sets it for this step; "
                f"set `{top}` instead")
    if key in SET_HERE[section]:
        return f"{section}: {label}: set by cai iterate ({SET_HERE[section][key]}); leave it out"
    return None


def _unknown(section: str, label: str, key: str, valid: list[str], what: str) -> str:
    near = difflib.get_close_matches(key, valid, n=3)
    if near:
        return f"{section}: {label}: unknown setting (did you mean {', '.join(near)}?)"
    return f"{section}: {label}: unknown setting; {what}"


def _pydantic_problems(section: str, exc: ValidationError) -> list[str]:
    out = []
    for e in exc.errors():
        loc = ".".join(map(str, e["loc"]))
        out.append(f"{section}: {loc}: {e['msg']}" if loc else f"{section}: {e['msg']}")
    return out


def _section_problems(cfg: IterateConfig, section: str, cls: type[BaseModel], build: Callable[[], Any]) -> list[str]:
    """A pydantic-configured step (generate, judge, eval): its keys, then its values."""
    data = getattr(cfg, section)
    valid = [k for k in cls.model_fields if k not in FROM_TOP[section] and k not in SET_HERE[section]]
    problems = []
    for key in data:
        taken = _taken(section, key)
        if taken:
            problems.append(taken)
        elif key not in cls.model_fields:
            problems.append(_unknown(section, key, key, valid, f"the settings of {COMMANDS[section]} it takes: "
                                     + ", ".join(valid)))
    if problems:
        return problems
    try:
        build()
    except ValidationError as exc:
        return _pydantic_problems(section, exc)
    except (UsageError, ValueError, TypeError) as exc:
        return [f"{section}: {exc}"]
    return []


def _type_fits(value: Any, tp: Any) -> bool:
    """Whether a recipe value can be a TRL field's: the plain types checked, any other accepted."""
    import enum
    import types
    import typing

    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_fits(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is Literal:
        return value in typing.get_args(tp)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin in (list, tuple, set, frozenset) or tp in (list, tuple, set):
        return isinstance(value, (list, tuple, str))  # TRL takes one name for a list of them (loss_type)
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return isinstance(value, tp) or value in {m.value for m in tp}
    return True


def _train_problems(cfg: IterateConfig) -> list[str]:
    """The train section: every key a TRL field of the method's config or a cai: setting, none that
    cai iterate sets, every value of the right type; then the recipe as `cai train` loads it."""
    from cai.train import load_recipe
    from cai.train.recipe import setting_owners
    from cai.train.registry import get_stage

    spec = get_stage(cfg.method)
    owners = setting_owners()
    nested = cfg.train.get("cai") or {}
    if not isinstance(nested, dict):
        return ["train: cai: must be a mapping of cai: settings"]
    flat = {k: v for k, v in cfg.train.items() if k != "cai"}
    config_cls = spec.config_class(spec.settings())
    fields = {f.name: f for f in dataclasses.fields(config_cls) if f.init}
    given = [(k, k, v) for k, v in flat.items()] + [(k, f"cai: {k}", v) for k, v in nested.items()]
    problems = []
    for key, label, _ in given:
        taken = _taken("train", key, label)
        if taken:
            problems.append(taken)
        elif key not in owners and (label != key or key not in fields):
            valid = sorted(owners) if label != key else [*fields, *sorted(owners)]
            problems.append(_unknown("train", label, key, valid, f"the settings it takes are {config_cls.__name__}'s "
                                     "fields and the cai: settings (docs/training.md)"))
    if problems:
        return problems
    hints = _type_hints(config_cls)
    for key, label, value in given:
        if key in owners:
            try:
                owners[key][0].settings.model_validate({key: value})
            except ValidationError as exc:
                problems += [f"train: {label}: {e['msg']}" for e in exc.errors()]
        elif key in hints:
            tp = hints[key]
            coerced = value
            if isinstance(value, str) and _type_fits(1.0, tp) and not _type_fits(value, tp):
                try:  # YAML 1.1 reads 2e-4 as a string; the recipe loader converts it
                    coerced = float(value)
                except ValueError:
                    pass
            if not _type_fits(coerced, tp):
                problems.append(f"train: {label}: {value!r} is not a valid value ({_type_name(tp)})")
    if problems:
        return problems
    try:
        load_recipe(cfg.method, None, train_overrides(cfg, cfg.model))
    except UsageError as exc:
        return [f"train: {exc}"]
    return []


def _type_hints(cls) -> dict:
    import typing

    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve: check the plain ones only
        return {f.name: f.type for f in dataclasses.fields(cls) if not isinstance(f.type, str)}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _extra_eval_problems(cfg: IterateConfig) -> list[str]:
    """What `cai eval` would only find out when it starts: its principles and calibration files."""
    problems = []
    if cfg.eval.get("compliance") is not None:
        from cai.constitution import load_constitution
        from cai.evaluate import compliance_principles

        try:
            compliance_principles(cfg.eval["compliance"], load_constitution(cfg.constitution, warn=None))
        except UsageError as exc:
            problems.append(f"eval: compliance: {exc}")
    return problems


def _calibration_problems(cfg: IterateConfig) -> list[str]:
    from cai.judge.calibration import resolve_source

    problems = []
    for section in ("judge", "eval"):
        source = getattr(cfg, section).get("calibration")
        if source not in (None, "none", "default"):
            try:
                resolve_source(source, flag="calibration:")
            except UsageError as exc:
                problems.append(f"{section}: {exc}")
    return problems


def check_sections(cfg: IterateConfig, source: str | None = None) -> None:
    """Build every step's settings as the steps will, before anything runs; a UsageError naming
    each bad key (and `source`, the --config file) otherwise."""
    from cai.config import GenerateConfig
    from cai.evaluate import EvalConfig
    from cai.pairs import JudgeRunConfig

    paths = Paths(Path(cfg.out), 1)  # names only: nothing is made
    later = str(paths.model)  # eval's model from the second iteration on
    problems = _section_problems(cfg, "generate", GenerateConfig, lambda: generate_config(cfg, cfg.model, paths))
    problems += _section_problems(cfg, "judge", JudgeRunConfig, lambda: judge_config(cfg, paths))
    problems += _train_problems(cfg)
    problems += _section_problems(cfg, "eval", EvalConfig,
                                  lambda: eval_config(cfg, later, paths).judge_settings())
    if not problems:
        problems += _extra_eval_problems(cfg) + _calibration_problems(cfg)
    if problems:
        where = f"{source}: " if source else ""
        raise UsageError(where + "; ".join(problems))


# ---------------------------------------------------------------- each step's settings

def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _how(cls: type[BaseModel], keep: tuple[str, ...] = ()) -> set[str]:
    """Settings of how a step runs, not of what it writes: its engine's (server, parallelism,
    memory, context), the requests in flight, where it writes, --force-new."""
    from cai.config import EngineConfig

    how = {k for k in EngineConfig.model_fields if k != "model"} | {"chunk_size", "force_new"}
    return {k for k in how if k in cls.model_fields and k not in keep}


def step_settings(cfg: IterateConfig, policy: str, paths: Paths, slice_rows: list[dict]) -> dict[str, dict]:
    """What each step's output depends on, each step after the first on the one before it: a rerun
    reuses a finished step whose settings are the same, and redoes it (and every later step) when
    they differ. Engine settings are left out (another engine writes the same rows), except the
    judge's backend, which `cai judge` counts as part of its pairs' identity."""
    gen = generate_config(cfg, policy, paths)
    gen_s = {"slice": _digest(slice_rows), "slice_size": len(slice_rows),
             **gen.model_dump(mode="json", exclude=_how(type(gen)) | {"prompts", "run_dir", "reviser_base_url"})}
    jud = judge_config(cfg, paths)
    jud_s = {"after": _digest(gen_s),
             **jud.model_dump(mode="json", exclude=_how(type(jud), keep=("backend",)) | {"run_dir", "pairs", "out"})}
    train_s = {"after": _digest(jud_s), "method": cfg.method, "policy": policy,
               "recipe": json.loads(json.dumps(train_overrides(cfg, policy), default=str))}
    ev = eval_config(cfg, str(paths.model), paths)
    eval_s = {"after": _digest(train_s), **ev.model_dump(mode="json", exclude=_how(type(ev)) | {"out", "model"})}
    return {"generate": gen_s, "judge": jud_s, "train": train_s, "eval": eval_s}


def _step_outputs(step: str, paths: Paths) -> list[Path]:
    """What a step leaves in the iteration's folder (a redone step's is removed first)."""
    return {"generate": [paths.prompts, paths.run],
            "judge": [paths.run / "preferences.jsonl", paths.run / "ties.jsonl"],
            "train": [paths.model], "eval": [paths.eval]}[step]


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def _diff(old: dict, new: dict) -> list[str]:
    keys = sorted(k for k in set(old) | set(new) if k != "after" and old.get(k) != new.get(k))
    return keys


def prepare_iteration(cfg: IterateConfig, state: dict, i: int, settings: dict[str, dict],
                      log: Callable[[str], None]) -> dict:
    """The unfinished iteration's record, its stale outputs removed: --force-new removes all of
    them; else the first step whose recorded settings differ from `settings`, and every later one."""
    out = Path(cfg.out)
    paths = Paths(out, i)
    rec = state["iterations"].setdefault(str(i), {"started": _now()})
    steps = rec.get("steps")
    tag = f"iterate {i}/{cfg.iterations}"
    if cfg.force_new and paths.root.exists():
        log(f"{tag}: --force-new: the iteration's started steps are removed and redone from scratch")
        shutil.rmtree(paths.root)
        steps = None
    elif steps is None and paths.root.exists():
        # Started by a cai iterate that recorded the whole settings only: same settings, same steps.
        if (state.get("settings") or {}) != cfg.identity():
            log(f"{tag}: started with other settings (before steps were keyed on their own); redone")
            for step in STEPS:
                for path in _step_outputs(step, paths):
                    _remove(path)
        else:
            steps = {step: {"settings": settings[step]} for step in STEPS}
    steps = steps or {}
    stale = next((s for s in STEPS if (steps.get(s) or {}).get("settings") != settings[s]), None)
    if stale is not None and steps:
        old = (steps.get(stale) or {}).get("settings") or {}
        redo, kept = STEPS[STEPS.index(stale):], STEPS[:STEPS.index(stale)]
        log(f"{tag}: {stale} settings changed since it ran ({', '.join(_diff(old, settings[stale])) or 'its input'}): "
            f"{', '.join(redo)} redone" + (f"; {', '.join(kept)} reused" if kept else ""))
        for step in redo:
            for path in _step_outputs(step, paths):
                _remove(path)
    redo = STEPS[STEPS.index(stale):] if stale else ()
    rec["steps"] = {s: {**({} if s in redo else (steps.get(s) or {})), "key": _digest(settings[s]),
                        "settings": settings[s]} for s in STEPS}
    return rec


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

def generate_config(cfg: IterateConfig, policy: str, paths: Paths):
    """`cai generate`'s settings for one iteration: the top-level settings, then the generate section."""
    from cai.config import GenerateConfig

    return GenerateConfig(model=policy, backend=cfg.backend, constitution=cfg.constitution, prompts=str(paths.prompts),
                          seed=cfg.seed, run_dir=str(paths.run), rounds=cfg.rounds if cfg.strategy == "revision" else 0,
                          samples=cfg.samples if cfg.strategy == "samples" else 1,
                          decontaminate=decontamination_sets(cfg), **cfg.generate)


def decontamination_sets(cfg: IterateConfig) -> list[str]:
    """The prompt sets no training prompt may overlap: the eval prompts every iteration is measured on
    (training on them would make the curve a memory test), then any the user names."""
    from cai.inputs import eval_prompts_path

    return list(dict.fromkeys([cfg.eval_prompts or str(eval_prompts_path()), *cfg.decontaminate]))


def judge_config(cfg: IterateConfig, paths: Paths):
    from cai.pairs import JudgeRunConfig

    return JudgeRunConfig(model=cfg.judge_name, backend=cfg.backend, constitution=cfg.constitution,
                          strategy=cfg.strategy, seed=cfg.seed, run_dir=str(paths.run), **cfg.judge)


def train_overrides(cfg: IterateConfig, policy: str) -> dict:
    """The training recipe's keys over the bundled recipe (flat: TRL fields and cai: settings)."""
    overrides: dict[str, Any] = {"max_steps": cfg.train_steps, "seed": cfg.seed}
    if cfg.reference == "base" and policy != cfg.model:
        # With LoRA TRL's own reference is the model it starts from (the adapter switched off):
        # the previous policy. The starting model as reference has to be named.
        overrides["ref_model"] = cfg.model
    flat = {k: v for k, v in cfg.train.items() if k != "cai"}
    overrides.update({**flat, **(cfg.train.get("cai") or {})})
    return overrides


def eval_config(cfg: IterateConfig, policy: str, paths: Paths):
    from cai.evaluate import EvalConfig

    return EvalConfig(model=policy, baseline=cfg.model, judge_model=cfg.judge_name, backend=cfg.backend,
                      prompts=cfg.eval_prompts, limit=cfg.eval_limit, out=str(paths.eval), seed=cfg.seed,
                      constitution=cfg.constitution, **cfg.eval)


def _generate(cfg: IterateConfig, policy: str, paths: Paths, progress: bool) -> dict:
    from cai.generate import run_generate

    summary = run_generate(generate_config(cfg, policy, paths), progress=progress)
    return {"written": summary.written, "reused": summary.skipped, "rows": summary.rows_total,
            "flag_counts": summary.flag_counts}


def _judge(cfg: IterateConfig, paths: Paths, progress: bool) -> dict:
    from cai.pairs import run_judge

    summary = run_judge(judge_config(cfg, paths), progress=progress)
    return {"judged": summary.judged, "reused": summary.skipped, "ties": summary.ties,
            "calibration": summary.calibration}


def usable_rows(cfg: IterateConfig, run: Path) -> tuple[int, list[str]]:
    """How many rows `method` would train on from the run folder (flagged and tied pairs left out)."""
    from cai.export import LeftOut, iter_rows

    if cfg.method == "dpo" and not (run / "preferences.jsonl").exists():
        return 0, []
    left = LeftOut()
    keep = bool((cfg.train.get("cai") or {}).get("keep_flagged") or cfg.train.get("keep_flagged"))
    n, labels = 0, set()
    for r in iter_rows(run, cfg.method, keep_flagged=keep, left_out=left):  # counted, never held
        n += 1
        labels.add(r.get("label"))
    if cfg.method == "kto" and len(labels) < 2:
        return 0, left.lines()
    return n, left.lines()


def _train(cfg: IterateConfig, policy: str, paths: Paths, log: Callable[[str], None]) -> dict:
    from cai.train import run_stage

    resume = (paths.model / "checkpoints").is_dir()
    return run_stage(cfg.method, paths.run, policy, paths.model, train_overrides(cfg, policy), resume=resume, log=log)


def _eval(cfg: IterateConfig, policy: str, paths: Paths, progress: bool) -> dict:
    from cai.evaluate import run_eval

    return run_eval(eval_config(cfg, policy, paths), progress=progress)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


TRAIN_FIGURES = ("steps", "train_runtime_s", "train_rows", "first_loss", "last_loss", "first_reward_margin",
                 "last_reward_margin", "loss_type", "resumed_from")


def run_iterate(cfg: IterateConfig, *, progress: bool = True,
                log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
                source: str | None = None) -> list[dict]:
    """Run (or resume) the iterations; returns the history rows. Every section is checked first
    (`source`: the --config file its errors name)."""
    check_sections(cfg, source)
    out = Path(cfg.out)
    rows = history.read(out / HISTORY)
    finished = len(rows)
    state = _load_state(out)
    state["iterations"] = {k: v for k, v in (state.get("iterations") or {}).items() if int(k) <= finished + 1}
    policy = rows[-1]["policy"] if rows else cfg.model
    if finished >= cfg.iterations:
        log(f"iterate: {finished} iterations already finished in {out} (--iterations {cfg.iterations}): nothing to do")
    elif finished and state.get("settings") and state["settings"] != cfg.identity():
        log(f"iterate: settings other than the last run's ({', '.join(_diff(state['settings'], cfg.identity()))}): "
            f"the {finished} finished iteration(s) keep theirs, these apply from iteration {finished + 1} on")
    for i in range(finished + 1, cfg.iterations + 1):
        paths = Paths(out, i)
        times: dict[str, float] = {}
        tag = f"iterate {i}/{cfg.iterations}"
        slice_rows, total, wrapped = prompt_slice(cfg.prompts, (i - 1) * cfg.per_iteration, cfg.per_iteration)
        rec = prepare_iteration(cfg, state, i, step_settings(cfg, policy, paths, slice_rows), log)
        steps = rec["steps"]
        state["settings"] = cfg.identity()
        _save_state(out, state)

        if not paths.prompts.exists():
            write_prompts(paths.prompts, slice_rows)
        start = (i - 1) * cfg.per_iteration % total
        if wrapped:
            log(f"{tag}: the prompt set has {total} prompts; this iteration's slice wraps to its start "
                "(prompts are seen again)")

        def done(step: str, summary: dict | None = None) -> None:
            steps[step].update(finished=_now(), **({"summary": summary} if summary is not None else {}))
            _save_state(out, state)

        t0 = time.perf_counter()
        what = f"{tag} generate: {cfg.per_iteration} prompts from #{start} with {_short(policy)}"
        if steps["generate"].get("finished") and "summary" in steps["generate"] and paths.run.is_dir():
            log(f"{what}; reusing the run folder (finished)")
            gen = steps["generate"]["summary"]
        else:
            log(what + ("; resuming the run folder" if (paths.run / "generations.jsonl").exists() else ""))
            gen = _generate(cfg, policy, paths, progress)
            done("generate", gen)
        times["generate"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        what = f"{tag} judge: {cfg.strategy} pairs, judge {_short(cfg.judge_name)}"
        if steps["judge"].get("finished") and "summary" in steps["judge"]:
            log(f"{what}; reusing its pairs (finished)")
            jud = steps["judge"]["summary"]
        else:
            log(what + ("; resuming" if (paths.run / "preferences.jsonl").exists()
                        or (paths.run / "ties.jsonl").exists() else ""))
            jud = _judge(cfg, paths, progress)
            done("judge", jud)
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
        done("train")
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
        done("eval")
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
        rec["finished"] = _now()
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


def row_line(row: dict) -> str:
    lo, hi = row.get("win_rate_ci") or (None, None)
    signal = row.get("signal")
    win = ("win rate not measured" if row.get("win_rate") is None
           else f"win rate {fmt(row.get('win_rate'))} ({fmt(lo)}-{fmt(hi)})" if signal is True
           else f"win rate {fmt(row.get('win_rate'))} ({fmt(lo)}-{fmt(hi)}), signal not measured" if signal is None
           else f"win rate no signal (measured {fmt(row.get('win_rate'))})")
    return (f"pairs {row['pairs']}, ties {row['ties']}, {win}, harmlessness {fmt(row.get('harmlessness'))}, "
            f"over-refusal {fmt(row.get('over_refusal'))}")


# ---------------------------------------------------------------- curve and report

def write_outputs(out: Path, rows: list[dict], cfg: IterateConfig) -> None:
    history.plot(rows, out / CURVE, x_key="iteration", title=f"cai iterate: {cfg.method} from {_short(cfg.model)}, "
                 f"judge {_short(cfg.judge_name)}")
    write_atomic(out / REPORT, report(rows, cfg))


def report(rows: list[dict], cfg: IterateConfig) -> str:
    cal = next((r["judge_calibration"] for r in rows if r.get("judge_calibration")), None)
    noise = [r["iteration"] for r in rows if r.get("signal") is False]
    unmeasured = [r["iteration"] for r in rows if r.get("signal") is None]
    lines = [f"# cai iterate: {len(rows)} of {cfg.iterations} iterations", "",
             f"Starting model `{cfg.model}`, {cfg.method} ({cfg.strategy} pairs, reference: {cfg.reference}), "
             f"{cfg.per_iteration} new prompts and {cfg.train_steps} steps per iteration; the judge "
             f"`{cfg.judge_name}` is the same for every iteration, and every eval compares the iteration's policy "
             f"with the starting model on the same {cfg.eval_limit} held-out prompts.", ""]
    if cal and not cal.get("skipped"):
        lines += [f"Judge calibration (measured once, carried into every iteration): agreement "
                  f"{fmt(cal.get('agreement'))} on {cal.get('n')} labelled pairs"
                  + (" — **below the floor: its labels, and so the pairs and win rates, are close to chance**"
                     if cal.get("below_floor") else "") + ".", ""]
    if noise:
        lines += [f"**No signal** in iteration(s) {', '.join(map(str, noise))}: those win rates are noise, not a "
                  "finding (see each row's reasons in history.jsonl).", ""]
    if unmeasured:
        lines += [f"**Signal not measured** in iteration(s) {', '.join(map(str, unmeasured))}: the judge was not "
                  "calibrated, so whether those win rates beat chance is unknown.", ""]
    lines += ["| iteration | prompts | pairs | ties | train loss | win rate vs start (95% CI) | signal | harmlessness | "
              "over-refusal | time (gen/judge/train/eval s) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r.get("train") or {}
        loss = f"{fmt(t.get('first_loss'))} → {fmt(t.get('last_loss'))}" if t else "skipped"
        lo, hi = r.get("win_rate_ci") or (None, None)
        secs = r.get("seconds") or {}
        lines.append(f"| {r['iteration']} | {r['prompts']['n']} from #{r['prompts']['from']} | {r['pairs']} | "
                     f"{r['ties']} | {loss} | {fmt(r.get('win_rate'))} ({fmt(lo)}-{fmt(hi)}) | "
                     f"{ {True: 'yes', False: 'no'}.get(r.get('signal'), 'not measured') } | {fmt(r.get('harmlessness'))} | "
                     f"{fmt(r.get('over_refusal'))} | {'/'.join(f'{secs.get(s, 0):.0f}' for s in STEPS)} |")
    lines += ["", f"![win rate, harmlessness and over-refusal by iteration]({CURVE})", "",
              "Each iteration's run folder, model and eval are under `iterations/NN/`."]
    return "\n".join(lines) + "\n"
