"""Finding and loading constitutions: bundled names, ./constitutions/ overriding them, and paths."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from cai.constitution.schema import Constitution
from cai.constitution.validation import ConstitutionError, Problem, check_text, errors_only
from cai.errors import UsageError
from cai.resources import bundled_dir

DEFAULT_CONSTITUTION = "default"


def validate_file(path: str | Path) -> list[Problem]:
    """Every problem of the file (not only the first); empty when it is valid."""
    try:
        text = read_text(Path(path))
    except OSError as exc:
        return [Problem(str(path), None, "", f"cannot read: {exc.strerror or exc}")]
    return check_text(text, str(path))[1]


def read_text(path: Path) -> str:
    """The file's text, newlines as written (so edits keep \r\n); not UTF-8 is a UsageError."""
    from cai.textfiles import decode_utf8

    with open(path, "rb") as f:
        return decode_utf8(f.read(), str(path))


def _search_dirs() -> list[Path]:
    # ./constitutions first: a user's file of the same name overrides the bundled one.
    return [Path("constitutions"), bundled_dir("constitutions")]


def list_constitutions() -> list[tuple[str, Path]]:
    found: dict[str, Path] = {}
    for folder in _search_dirs():
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")):
                found.setdefault(path.stem, path)
    return sorted(found.items())


def resolve_constitution(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    is_path = isinstance(name_or_path, Path) or text.endswith((".yaml", ".yml")) or "/" in text or os.sep in text
    if not is_path:
        known = dict(list_constitutions())
        if text in known:
            return known[text]
        if not Path(text).is_file():
            raise UsageError(f"unknown constitution {text!r}: known names are {', '.join(known) or '(none)'}, "
                             "or give the path of a YAML file")
    path = Path(text)
    if not path.is_file():
        raise UsageError(f"{path}: no such constitution file")
    return path


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr)


def load_constitution(name_or_path: str | Path, *, warn: Callable[[str], None] | None = _to_stderr) -> Constitution:
    """Load for use: errors refuse the file (UsageError, exit 2); warnings go to `warn`, since
    their text reaches the model as it is (a `{{ ... }}` in a principle is literal text, not code)."""
    path = resolve_constitution(name_or_path)
    try:
        text = read_text(path)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    constitution, problems = check_text(text, str(path), strict=False)
    errors = errors_only(problems)
    if errors:
        raise ConstitutionError(errors)
    if warn is not None:
        for p in problems:
            warn(f"warning: {p}")
    constitution.source = str(path)
    return constitution
