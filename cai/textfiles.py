"""Reading the text files users hand to cai (constitutions, recipes, templates, prompt sets) safely.

Two hostile or broken inputs are refused with exit 2 and the place, before any parser runs:
bytes that are not UTF-8 (a UTF-16 file, random bytes), and YAML aliases. An alias lets a few
hundred bytes expand into billions of nodes ("nine levels of nine-fold aliases"), and none of
cai's YAML files needs one: a constitution or recipe is short enough to write out.
"""

from __future__ import annotations

from pathlib import Path

from cai.errors import UsageError


def decode_utf8(data: bytes, where: str) -> str:
    """`data` as text, or a UsageError naming the first byte that is not UTF-8 and its offset."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{where}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


def read_utf8(path: str | Path) -> str:
    """A file's text (newlines kept as written); OSError as a UsageError too."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return decode_utf8(data, str(path))


def alias_line(text: str) -> int | None:
    """The line (1-based) of the first YAML alias (`*name`) in `text`, or None. Scanning tokens
    expands nothing, so this is cheap even on a bomb; a text the scanner rejects is left to the
    parser, which reports it with its own line."""
    import yaml

    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(token, yaml.AliasToken):
                return token.start_mark.line + 1
    except yaml.YAMLError:
        return None
    return None


def refuse_aliases(text: str, where: str) -> None:
    line = alias_line(text)
    if line is not None:
        raise UsageError(f"{where}:{line}: yaml: aliases (*name) are not allowed here; write the value out")


def read_recipe_file(path: str | Path) -> dict:
    """A YAML recipe: UTF-8, no aliases, a mapping at the top (an empty file is an empty one)."""
    import yaml

    text = read_utf8(path)
    refuse_aliases(text, str(path))
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a recipe is a mapping of settings")
    return data


def json_lines(path: str | Path, what: str = "an object"):
    """(line number, object) for each non-blank line of a JSONL file; a line that is not UTF-8, not
    JSON or not an object is a UsageError naming the file and the line."""
    import json

    with open(path, "rb") as fh:
        for n, data in enumerate(fh, 1):
            line = decode_utf8(data, f"{path}: line {n}")
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{path}: line {n}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise UsageError(f"{path}: line {n}: a row is {what}")
            yield n, row
