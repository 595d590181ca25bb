"""Reading the text files users hand to cai (constitutions, recipes, templates, prompt sets) safely.

Two hostile or broken inputs are refused with exit 2 and the place, before any parser runs:
bytes that are not UTF-8 (a UTF-16 file, random bytes), and YAML aliases. An alias lets a few
hundred bytes expand into billions of nodes ("nine levels of nine-fold aliases"), and none of
cai's YAML files needs one: a constitution or recipe is short enough to write out.
"""

from __future__ import annotations

import re
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


def yaml_error(exc: Exception, text: str) -> str:
    """What a PyYAML error says, in one line: `line L, column C: not valid YAML: what is wrong`,
    with what the parser was in the middle of and the offending line as written (a tab shows as
    \\t). PyYAML's own text spans several lines and names no file ("<unicode string>")."""
    import yaml

    lines = re.split("\r\n|[\r\n\x85\u2028\u2029]", text)  # YAML's line breaks, as its marks count them
    if lines and lines[-1] == "":
        lines.pop()

    def at(line: int, column: int | None = None) -> str:
        return f"line {line + 1}" + (f", column {column + 1}" if column is not None else "")

    def reads(line: int) -> str:
        if 0 <= line < len(lines) and lines[line].strip():
            shown = lines[line] if len(lines[line]) <= 80 else lines[line][:77] + "..."
            return f"; the line reads {shown!r}"
        return "; the file ends there (cut short?)" if line >= len(lines) - 1 else ""

    if isinstance(exc, yaml.reader.ReaderError):  # a character YAML does not allow (NUL, other controls)
        line = text.count("\n", 0, exc.position)
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1)
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        what = f"character #x{char:04x} is not allowed in YAML"
        return f"{at(line, column)}: not valid YAML: {what}{reads(line)}"
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if mark is None:
        return f"not valid YAML: {problem}"
    during = ""
    if context:
        during = f" ({context}" + (f" begun at {at(cmark.line, cmark.column)}" if cmark is not None
                                  and (cmark.line, cmark.column) != (mark.line, mark.column) else "") + ")"
    return f"{at(mark.line, mark.column)}: not valid YAML: {problem}{during}{reads(mark.line)}"


def _kind(data) -> str:
    if data is None:
        return "nothing (it is empty or only comments)"
    if isinstance(data, list):
        return "a list at the top"
    return f"a single {type(data).__name__} value at the top"


def load_yaml_mapping(text: str, where: str, *, what: str = "a mapping of settings", hint: str = "",
                      empty_ok: bool = True) -> dict:
    """`text` parsed as YAML whose top level is a mapping, or a UsageError naming `where`, the line
    and column and what is wrong, followed by `hint` (what the file is and what to do about it).
    An empty file is an empty mapping when `empty_ok`."""
    import yaml

    tail = f". {hint}" if hint else ""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"{where}: {yaml_error(exc, text)}{tail}") from None
    if data is None and empty_ok:
        return {}
    if not isinstance(data, dict):
        node = yaml.compose(text, Loader=yaml.SafeLoader) if data is not None else None
        place = f"line {node.start_mark.line + 1}: " if node is not None else ""
        raise UsageError(f"{where}: {place}the file holds {_kind(data)}, not {what}{tail}")
    return data


def read_recipe_file(path: str | Path) -> dict:
    """A YAML recipe: UTF-8, no aliases, a mapping at the top (an empty file is an empty one)."""
    text = read_utf8(path)
    refuse_aliases(text, str(path))
    return load_yaml_mapping(text, str(path), what="a mapping of settings (a recipe is one)")


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
