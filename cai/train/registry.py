"""Every training stage `cai train` knows. A new method is a module declaring a `Stage` plus its line here."""

from __future__ import annotations

from cai.errors import UsageError
from cai.train import dpo, kto, reward, rl, sft
from cai.train.stage import Stage

STAGES: dict[str, Stage] = {s.name: s for s in (sft.STAGE, dpo.STAGE, kto.STAGE, reward.STAGE, rl.STAGE)}


def get_stage(name: str) -> Stage:
    if name not in STAGES:
        raise UsageError(f"unknown stage {name!r}: one of {', '.join(STAGES)}")
    return STAGES[name]
