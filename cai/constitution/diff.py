"""Comparing two constitutions entry by entry (`cai constitution diff`)."""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from cai.constitution.schema import SECTIONS, Constitution


class DiffRow(NamedTuple):
    """One difference. A tuple, so `change, what, field, old, new = row` reads it too."""

    change: Literal["added", "removed", "changed"]
    what: str  # "constitution", or the entry: "principle ID" / "comparison ID"
    field: str = ""  # empty for an added or removed entry
    old: Any = None
    new: Any = None


def diff_constitutions(a: Constitution, b: Constitution) -> list[DiffRow]:
    """What changed from `a` to `b`: top-level fields, then each section's entries by id."""
    rows: list[DiffRow] = []
    for f in ("name", "version", "description", "system_prompt"):
        if getattr(a, f) != getattr(b, f):
            rows.append(DiffRow("changed", "constitution", f, getattr(a, f), getattr(b, f)))
    for section in SECTIONS:
        kind = section[:-1]
        old = {x.id: x for x in getattr(a, section)}
        new = {x.id: x for x in getattr(b, section)}
        rows += [DiffRow("removed", f"{kind} {i}") for i in old if i not in new]
        rows += [DiffRow("added", f"{kind} {i}") for i in new if i not in old]
        for i in (i for i in old if i in new):
            for f in type(old[i]).model_fields:
                if getattr(old[i], f) != getattr(new[i], f):
                    rows.append(DiffRow("changed", f"{kind} {i}", f, getattr(old[i], f), getattr(new[i], f)))
    if a.few_shot != b.few_shot:
        rows.append(DiffRow("changed", "constitution", "few_shot", f"{len(a.few_shot)} examples",
                            f"{len(b.few_shot)} examples"))
    return rows
