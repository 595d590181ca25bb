"""What a constitution holds: its principles, the judge's comparison questions, few-shot
examples, and the deterministic draws a run makes from them.

The models forbid unknown keys and blank text; `cai.constitution.validation` turns their errors
into `file:line: field: message` problems.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cai.errors import UsageError

SECTIONS = ("principles", "comparisons")  # the id-carrying lists; ids are unique across both
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _text(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_blank_text(cls, value: Any) -> Any:
        return _text(value) if isinstance(value, str) else value


class _Identified(_Strict):
    id: str

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        # Ids name principles on the command line and in every record, so keep them shell-friendly.
        if not _ID.match(value):
            raise ValueError("must be a short name of letters, digits, '-', '_' or '.'")
        return value


class Principle(_Identified):
    critique: str = Field(description="The critique request, asked right after the answer it criticises.")
    revision: str = Field(description="The matching revision request, asked after the critique.")
    weight: float = Field(1.0, description="Relative sampling weight; a principle is drawn per record and round.")
    tags: list[str] = []

    @field_validator("weight")
    @classmethod
    def _weight(cls, value: float) -> float:
        if not math.isfinite(value) or value <= 0:
            raise ValueError("must be positive")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        return [_text(t) for t in value]


class Comparison(_Identified):
    question: str = Field(description="Asked of the pairwise judge, e.g. 'Which response is more honest?'")
    # Left out of every dump at its default, so the sha256 and run.yaml snapshot of a constitution
    # that sets no comparison weights are what they were before comparisons had weights.
    weight: float = Field(1.0, exclude_if=lambda w: w == 1.0,
                          description="Relative chance of being drawn for a pair (an ensemble's questions are "
                                      "drawn by weight, then averaged equally); 0 keeps the question in the file "
                                      "but never asks it (`cai constitution audit --allow-zero`).")

    @field_validator("weight")
    @classmethod
    def _weight(cls, value: float) -> float:
        if not math.isfinite(value) or value < 0:
            raise ValueError("must be zero or positive")
        return value


class FewShot(_Strict):
    prompt: str
    answer: str
    critique: str
    revision: str


class Constitution(_Strict):
    name: str
    version: str
    description: str
    principles: list[Principle]
    comparisons: list[Comparison]
    few_shot: list[FewShot] = []
    system_prompt: str | None = None
    source: str | None = Field(None, exclude=True, description="The file it was loaded from; not content.")

    @field_validator("version", mode="before")
    @classmethod
    def _version_number(cls, value: Any) -> Any:
        # An unquoted `version: 3` or `1.0` is a YAML number; accept it rather than make users quote.
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if not re.search(r"\d", value):
            raise ValueError('must contain a number, e.g. "1.0"; edits increment its last number')
        return value

    @model_validator(mode="after")
    def _unique_ids(self) -> "Constitution":
        ids = [p.id for p in self.principles] + [c.id for c in self.comparisons]
        dups = sorted({i for i in ids if ids.count(i) > 1})
        if dups:
            raise ValueError(f"duplicate ids: {', '.join(dups)}")
        if self.comparisons and not any(c.weight > 0 for c in self.comparisons):
            raise ValueError("every comparison has weight 0: at least one must be drawn")
        return self

    def sha256(self) -> str:
        data = self.model_dump(exclude={"source"})
        return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    def principle(self, id: str) -> Principle:
        for p in self.principles:
            if p.id == id:
                return p
        raise UsageError(f"constitution {self.name!r} has no principle {id!r} "
                         f"(known: {', '.join(p.id for p in self.principles)})")

    def draw_principle(self, key: str) -> Principle:
        """A weighted draw that depends only on `key` (e.g. "record:round"), so reruns agree."""
        if not self.principles:
            raise UsageError(f"constitution {self.name!r} has no principles: add one with `cai constitution add`")
        return _rng(key).choices(self.principles, weights=[p.weight for p in self.principles])[0]

    def draw_comparisons(self, key: str, k: int) -> list[Comparison]:
        """k distinct questions when there are enough; otherwise all of them, then repeats. Drawn by
        weight; a weight of 0 is never drawn."""
        if not self.comparisons:
            raise UsageError(f"constitution {self.name!r} has no comparisons for the judge")
        # Salted so that a key used for both draws does not tie the question to the principle.
        rng = _rng("comparisons:" + key)
        pool = [c for c in self.comparisons if c.weight > 0]
        if len({c.weight for c in pool}) == 1:
            # Equal weights keep the draw they had before weights existed: existing runs' pairs stay theirs.
            drawn = rng.sample(pool, min(k, len(pool)))
            return drawn + [rng.choice(pool) for _ in range(k - len(drawn))]
        weights = [c.weight for c in pool]
        # Weighted sampling without replacement (Efraimidis-Spirakis): the k largest u^(1/w).
        keys = [rng.random() ** (1.0 / w) for w in weights]
        order = sorted(range(len(pool)), key=lambda i: -keys[i])
        drawn = [pool[i] for i in order[:k]]
        return drawn + rng.choices(pool, weights=weights, k=k - len(drawn))


def _rng(key: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest(), "big"))


# The model of one entry of each list, for messages that name the keys an entry may have.
ITEM_MODELS: dict[str, type[BaseModel]] = {"principles": Principle, "comparisons": Comparison, "few_shot": FewShot}
