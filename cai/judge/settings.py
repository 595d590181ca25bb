"""The judge's settings, the one rule for its constitution, and the judge they make.

`cai judge`, `cai eval`, `cai demo` and `cai train rl --reward judge` each fill a `JudgeSettings`
(from their own flags and recipe keys) and get their judge from `build_judge`, so the same settings
give the same judge whichever command asks.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from pydantic import Field

from cai.backends.base import Backend
from cai.config import EngineConfig
from cai.constitution import Constitution, load_constitution
from cai.errors import UsageError
from cai.judge.figures import MIN_AGREEMENT
from cai.judge.pairwise import Judge, JudgeConfig
from cai.models import DEFAULT_MODEL
from cai.prompts import Templates
from cai.window import ChunkSize


class JudgeSettings(JudgeConfig, EngineConfig):
    """The judge: its model and engine, how it is asked, its tie threshold and its constitution."""

    model: str = Field(DEFAULT_MODEL, description="The judge model (may differ from the policy).")
    constitution: str | None = Field(None, description="Default: the run's constitution (or the bundled one).")
    strategy: Literal["revision", "samples"] = "revision"
    chunk_size: ChunkSize = Field("auto", description="Pairs in flight at once; auto: sized from the judge "
                                  "engine's capacity (cai/window.py).")
    templates: str | None = None
    calibration: str | None = Field(None, description="Labelled pairs the judge is calibrated on first: a JSONL file "
                                    "(rows as in --pairs plus label a|b), none, or unset for the bundled hard set.")
    min_agreement: float = Field(MIN_AGREEMENT, ge=0.0, le=1.0, description="Calibration agreement below which the judge's "
                                 "labels are reported as close to chance.")
    strict: bool = Field(False, description="Exit 1 before judging when the calibration is below min_agreement.")

    def judge_config(self) -> JudgeConfig:
        return JudgeConfig(**{k: getattr(self, k) for k in JudgeConfig.model_fields})


@dataclass(frozen=True)
class ChosenConstitution:
    constitution: Constitution
    how: str  # said in the model card and the log: where the judge's questions come from


def choose_constitution(explicit: str | None = None, *, run_dir: str | Path | None = None,
                        data_name: str | None = None, data_sha256: str | None = None,
                        log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> ChosenConstitution:
    """The judge's constitution, by one rule: `explicit` (a flag or recipe key) when given; else the
    snapshot in the run folder's run.yaml (the constitution the answers were written under, even if
    its file has changed since); else the constitution the data's provenance names, when one of that
    name has the same sha256; else the bundled `default`."""
    if explicit:
        return ChosenConstitution(load_constitution(explicit), explicit)
    if run_dir is not None:
        from cai.records import RunFolder

        snapshot = RunFolder(run_dir).info().get("constitution")
        if snapshot:
            c = Constitution.model_validate(snapshot)
            return ChosenConstitution(c, f"{c.name} (sha256 {c.sha256()[:12]}, the run's run.yaml snapshot)")
    # Several hashes (rows from several runs) name no one constitution.
    if data_name and data_sha256 and "," not in data_sha256:
        try:
            c = load_constitution(data_name)
        except UsageError:
            c = None
        if c is not None and c.sha256() == data_sha256:
            return ChosenConstitution(c, f"{c.name} (sha256 {data_sha256[:12]}, named by the data)")
        log(f"the data was made with constitution {data_name} (sha256 {data_sha256[:12]}), which is not found as "
            "it was; the judge asks `default`'s questions (pass --constitution to choose)")
    return ChosenConstitution(load_constitution("default"), "default")


def build_judge(settings: JudgeSettings, constitution: Constitution, *, backend: Backend | None = None,
                templates: Templates | None = None) -> Judge:
    """The judge the settings describe; starts its engine unless `backend` is given. `templates`:
    the settings' templates, when the caller loaded them already (to check them before an engine)."""
    templates = templates or Templates(settings.templates)
    if backend is None:
        from cai import backends  # looked up at call time, so a test can stand in for the engine

        backend = backends.load_backend(settings.backend, settings.model, **settings.backend_options())
    return Judge(backend, constitution, settings.judge_config(), templates)
