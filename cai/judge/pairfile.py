"""Pair files: the rows `cai judge --pairs` judges and `--calibration` measures a judge on.

Both calibration and the pairs stage read them, so the reader lives here, below both.
"""

from __future__ import annotations

from pathlib import Path

from cai.errors import UsageError


def read_pairs(in_path: Path) -> list[tuple[dict, list[dict]]]:
    """Outside pairs, checked: (row, prompt as messages) for rows {id, prompt, response_a, response_b}."""
    from cai.textfiles import json_lines

    rows = []
    for n, row in json_lines(in_path, "an object {id, prompt, response_a, response_b}"):
        for f in ("id", "prompt", "response_a", "response_b"):
            if f not in row:
                raise UsageError(f"{in_path}: line {n}: {f}: missing")
        for f in ("response_a", "response_b"):
            if not isinstance(row[f], str):
                raise UsageError(f"{in_path}: line {n}: {f}: must be a string")
        prompt = row["prompt"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        elif not (isinstance(prompt, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt)):
            raise UsageError(f"{in_path}: line {n}: prompt: a string or a list of {{role, content}} messages")
        rows.append((row, prompt))
    return rows


def read_labelled_pairs(path: Path) -> list[tuple[dict, list[dict]]]:
    """Rows as in `cai judge --pairs`, plus `label`: "a" or "b"; a bad row names its line and field."""
    rows = read_pairs(path)
    for n, (row, _) in enumerate(rows, 1):
        if row.get("label") not in ("a", "b"):
            raise UsageError(f"{path}: row {n} (id {row.get('id')!r}): label: must be \"a\" or \"b\", "
                             f"not {row.get('label')!r}")
    if not rows:
        raise UsageError(f"{path}: no calibration pairs")
    return rows
