"""The constitution: critique/revision principles, the judge's comparison questions, examples.

A constitution is a YAML file checked by the models below (unknown keys are an error). Loading
reports every problem as `file:line: field: message`. Two kinds: errors (bad YAML, a missing field,
a wrong type, a duplicate id, ...) make a file unusable; warnings (template syntax in a text, two
near-identical principles) are likely mistakes that `cai constitution validate` and the editing
commands refuse, while a run only prints them: the text is sent as it is, never rendered. Edits (`cai constitution add/remove/set`)
change only the lines they must, so a user's comments, key order and quoting survive them; the
round-trip parse of ruamel.yaml supplies the line numbers, and renders the new lines.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import math
import os
import random
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.scalarstring import (
    DoubleQuotedScalarString,
    FoldedScalarString,
    LiteralScalarString,
    SingleQuotedScalarString,
)

from cai.errors import UsageError
from cai.resources import bundled_dir

DEFAULT_CONSTITUTION = "default"
SECTIONS = ("principles", "comparisons")  # the id-carrying lists; ids are unique across both
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TEMPLATE = re.compile(r"\{\{|\{%|\{#")
NEAR_DUPLICATE = 0.9  # share of words in common above which two texts count as one principle


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
        """k distinct questions when there are enough; otherwise all of them, then repeats."""
        if not self.comparisons:
            raise UsageError(f"constitution {self.name!r} has no comparisons for the judge")
        # Salted so that a key used for both draws does not tie the question to the principle.
        rng = _rng("comparisons:" + key)
        pool = list(self.comparisons)
        drawn = rng.sample(pool, min(k, len(pool)))
        return drawn + [rng.choice(pool) for _ in range(k - len(drawn))]


def _rng(key: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest(), "big"))


_MODELS: dict[str, type[BaseModel]] = {"principles": Principle, "comparisons": Comparison, "few_shot": FewShot}


# ---------------------------------------------------------------------------------------------
# Problems and validation


@dataclass(frozen=True)
class Problem:
    file: str
    line: int | None
    field: str
    message: str
    warning: bool = False  # a likely mistake, not a broken file: loading for a run goes on

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class ConstitutionError(UsageError):
    """A constitution file with problems; `problems` lists all of them, the message names the first."""

    def __init__(self, problems: list[Problem], note: str = ""):
        self.problems = problems
        more = (f" (and {len(problems) - 1} more; `cai constitution validate {problems[0].file}` lists them)"
                if len(problems) > 1 else "")
        super().__init__(f"{problems[0]}{more}{note}")


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096  # never re-wrap a long principle onto several lines
    return y


def _parse(text: str, file: str) -> tuple[Any, list[Problem]]:
    from cai.textfiles import alias_line

    line = alias_line(text)
    if line is not None:  # a few hundred bytes of nested aliases expand past any memory
        return None, [Problem(file, line, "yaml", "aliases (*name) are not allowed in a constitution; write the "
                              "value out")]
    try:
        return _yaml().load(text), []
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        return None, [Problem(file, mark.line + 1 if mark else None, "yaml", f"not valid YAML: {exc.problem}")]
    except YAMLError as exc:
        return None, [Problem(file, None, "yaml", f"not valid YAML: {exc}")]


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, bool):
        return bool(node)
    for kind in (str, int, float):
        if isinstance(node, kind):
            return kind(node)
    return node


def _line(doc: Any, loc: tuple) -> int | None:
    """The 1-based line of the deepest part of `loc` present in the file (a missing key: its parent)."""
    node, line = doc, doc.lc.line + 1
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            line, node = node.lc.key(part)[0] + 1, node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            line, node = node.lc.item(part)[0] + 1, node[part]
        else:
            break
    return line


def _field(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


_MESSAGES = {
    "missing": "required field is missing",
    "string_type": "must be text (quote it if it looks like a number or yes/no)",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "list_type": "must be a list",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "dict_type": "must be a mapping",
}


def _message(err: dict, data: Any) -> str:
    loc, kind = err["loc"], err["type"]
    if kind == "extra_forbidden":
        model = _MODELS.get(loc[0], Constitution) if len(loc) == 3 else Constitution
        known = [f for f in model.model_fields if f != "source"]
        return f"unknown key (known keys: {', '.join(known)})"
    if kind == "missing" and len(loc) == 3 and loc[0] == "principles" and loc[2] in ("critique", "revision"):
        other = "critique" if loc[2] == "revision" else "revision"
        item = data["principles"][loc[1]]
        if isinstance(item, dict) and other in item:
            return f"the {other} has no matching {loc[2]} request: each principle needs both"
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    msg = err["msg"].removeprefix("Value error, ")
    return msg[:1].lower() + msg[1:]


def _lint(file: str, doc: CommentedMap, data: dict) -> list[Problem]:
    """Checks beyond the types, done on the raw data so they are reported with the type errors."""
    problems: list[Problem] = []
    seen: dict[str, tuple] = {}
    texts: dict[tuple[str, str], list[tuple[tuple, str]]] = {}
    for section, fields in (("principles", ("critique", "revision")), ("comparisons", ("question",)),
                            ("few_shot", ("prompt", "answer", "critique", "revision"))):
        items = data.get(section)
        for i, item in enumerate(items if isinstance(items, list) else []):
            if not isinstance(item, dict):
                continue
            ident = item.get("id")
            if section in SECTIONS and isinstance(ident, str):
                loc = (section, i, "id")
                if ident in seen:
                    first = _line(doc, seen[ident])
                    problems.append(Problem(file, _line(doc, loc), _field(loc),
                                            f"duplicate id {ident!r} (first used at line {first})"))
                else:
                    seen[ident] = loc
            for f in fields:
                if isinstance(item.get(f), str):
                    texts.setdefault((section, f), []).append(((section, i, f), item[f]))
    if isinstance(data.get("system_prompt"), str):
        texts[("system_prompt", "")] = [(("system_prompt",), data["system_prompt"])]
    for (section, _), entries in texts.items():
        for loc, text in entries:
            found = _TEMPLATE.search(text)
            if found:
                problems.append(Problem(file, _line(doc, loc), _field(loc),
                                        f"contains template syntax {found.group()!r}: constitution text is sent "
                                        "to the model as it is, never rendered", warning=True))
        if section in SECTIONS:
            problems += _near_duplicates(file, doc, entries)
    return problems


def _near_duplicates(file: str, doc: CommentedMap, entries: list[tuple[tuple, str]]) -> list[Problem]:
    # Compared word by word: two principles that differ in one word of five are different
    # principles, while one word in thirty is most likely a copy that was meant to be merged.
    problems = []
    words = [re.findall(r"\w+", text.lower()) for _, text in entries]
    for j in range(len(entries)):
        for i in range(j):
            matcher = difflib.SequenceMatcher(None, words[i], words[j], autojunk=False)
            same = words[i] == words[j]
            if same or (matcher.real_quick_ratio() > NEAR_DUPLICATE and matcher.quick_ratio() > NEAR_DUPLICATE
                        and matcher.ratio() > NEAR_DUPLICATE):
                how = "the same text as" if same else f"nearly the same text ({matcher.ratio():.0%} of words) as"
                loc_i, loc_j = entries[i][0], entries[j][0]
                problems.append(Problem(file, _line(doc, loc_j), _field(loc_j),
                                        f"{how} {_field(loc_i)} (line {_line(doc, loc_i)}): merge the two, "
                                        "or raise the weight of one", warning=True))
                break
    return problems


def errors_only(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if not p.warning]


def check_text(text: str, file: str = "<text>", *, strict: bool = True) -> tuple[Constitution | None, list[Problem]]:
    """The constitution in `text` if it is valid, and every problem found (empty when valid).

    `strict=False` also returns the constitution when the only problems are warnings (loading for
    a run); the problems list always holds all of them.
    """
    doc, problems = _parse(text, file)
    if problems:
        return None, problems
    if not isinstance(doc, CommentedMap):
        what = "empty" if doc is None else f"a {type(doc).__name__}"
        return None, [Problem(file, 1, "document", f"is {what}: expected a mapping with name, version, "
                                                   "description, principles and comparisons")]
    data = _plain(doc)
    if "source" in data:  # a field of the model, but filled in by the loader, never by the file
        problems.append(Problem(file, _line(doc, ("source",)), "source", "unknown key (the loader sets it)"))
        del data["source"]
    constitution = None
    try:
        constitution = Constitution.model_validate(data)
    except ValidationError as exc:
        # An error without a location comes from the id check, which _lint reports with lines.
        problems += [Problem(file, _line(doc, e["loc"]), _field(e["loc"]), _message(e, data))
                     for e in exc.errors() if e["loc"]]
    problems += _lint(file, doc, data)
    problems = sorted(dict.fromkeys(problems), key=lambda p: p.line or 0)
    usable = not (problems if strict else errors_only(problems))
    return (constitution if usable else None), problems


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


# ---------------------------------------------------------------------------------------------
# Finding and loading


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


def diff_constitutions(a: Constitution, b: Constitution) -> list[tuple[str, str, str, Any, Any]]:
    """(change, what, field, old, new) rows; change is "added", "removed" or "changed"."""
    rows: list[tuple[str, str, str, Any, Any]] = []
    for f in ("name", "version", "description", "system_prompt"):
        if getattr(a, f) != getattr(b, f):
            rows.append(("changed", "constitution", f, getattr(a, f), getattr(b, f)))
    for section in SECTIONS:
        kind = section[:-1]
        old = {x.id: x for x in getattr(a, section)}
        new = {x.id: x for x in getattr(b, section)}
        rows += [("removed", f"{kind} {i}", "", None, None) for i in old if i not in new]
        rows += [("added", f"{kind} {i}", "", None, None) for i in new if i not in old]
        for i in (i for i in old if i in new):
            for f in type(old[i]).model_fields:
                if getattr(old[i], f) != getattr(new[i], f):
                    rows.append(("changed", f"{kind} {i}", f, getattr(old[i], f), getattr(new[i], f)))
    if a.few_shot != b.few_shot:
        rows.append(("changed", "constitution", "few_shot", f"{len(a.few_shot)} examples", f"{len(b.few_shot)} examples"))
    return rows


# ---------------------------------------------------------------------------------------------
# Editing: line-level changes located by the round-trip parse


def bump_version(version: str) -> str:
    """Increment the last number: "1.0" → "1.1", "3" → "4", "1.9" → "1.10"."""
    numbers = list(re.finditer(r"\d+", version))
    if not numbers:
        return version + ".1"
    last = numbers[-1]
    return version[:last.start()] + str(int(last.group()) + 1).zfill(len(last.group())) + version[last.end():]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _filler(line: str, max_col: int) -> bool:
    """A blank line, or a comment at or left of `max_col` (it introduces what follows)."""
    stripped = line.strip()
    return not stripped or (stripped.startswith("#") and _indent(line) <= max_col)


class Editor:
    """One file's lines plus its round-trip tree. Make one edit per editor: positions come from the
    parse of the text it was built from."""

    def __init__(self, text: str):
        self.nl = "\r\n" if "\r\n" in text else "\n"
        self.lines = text.splitlines(keepends=True)
        doc, problems = _parse(text, "<text>")
        if problems:
            raise ConstitutionError(problems)
        if not isinstance(doc, CommentedMap) or not doc:
            raise UsageError("the file is not a YAML mapping; fix it with `cai constitution edit`")
        self.doc = doc

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def _splice(self, start: int, end: int, new: list[str]) -> None:
        if start > 0 and not self.lines[start - 1].endswith("\n"):
            self.lines[start - 1] += self.nl
        self.lines[start:end] = new

    def _trim(self, start: int, end: int, col: int) -> int:
        while end > start and _filler(self.lines[end - 1], col):
            end -= 1
        return end

    def _entry_end(self, mapping: CommentedMap, key: str, limit: int) -> int:
        keys = list(mapping)
        after = keys.index(key) + 1
        line, col = mapping.lc.key(key)
        nxt = mapping.lc.key(keys[after])[0] if after < len(keys) else limit
        return self._trim(line + 1, nxt, col)

    def find(self, ident: str) -> tuple[str, int]:
        for section in SECTIONS:
            seq = self.doc.get(section)
            for i, item in enumerate(seq if isinstance(seq, list) else []):
                if isinstance(item, dict) and item.get("id") == ident:
                    return section, i
        raise UsageError(f"no principle or comparison with id {ident!r}")

    def _block(self, section: str) -> CommentedSeq | None:
        seq = self.doc.get(section)
        if isinstance(seq, CommentedSeq) and seq.fa.flow_style() and seq:
            raise UsageError(f"{section} is written in flow style ([...]); change it with `cai constitution edit`")
        return seq if isinstance(seq, CommentedSeq) and seq else None

    def _dash(self, seq: CommentedSeq, i: int) -> int:
        line = seq.lc.item(i)[0]
        while line > 0 and not self.lines[line].lstrip().startswith("-"):
            line -= 1
        return line

    def _leading(self, line: int) -> int:
        """The first of the comment lines right above `line` that introduce it."""
        col = _indent(self.lines[line])
        while line > 0 and self.lines[line - 1].strip().startswith("#") and _indent(self.lines[line - 1]) <= col:
            line -= 1
        return line

    def item_span(self, section: str, i: int) -> tuple[int, int, int]:
        """(first line of its leading comments, its dash line, end) of item i, end exclusive."""
        seq = self._block(section)
        start = self._dash(seq, i)
        if i + 1 < len(seq):
            limit = self._leading(self._dash(seq, i + 1))
        else:
            limit = self._entry_end(self.doc, section, len(self.lines))
        return self._leading(start), start, self._trim(start + 1, limit, _indent(self.lines[start]))

    def _style(self) -> tuple[int, int]:
        """(dash, content) offsets of the file's block lists, relative to their key."""
        for section in SECTIONS:
            seq = self.doc.get(section)
            if isinstance(seq, CommentedSeq) and seq and not seq.fa.flow_style():
                key = self.doc.lc.key(section)[1]
                dash = _indent(self.lines[self._dash(seq, 0)])
                return dash - key, max(seq.lc.item(0)[1] - key, dash - key + 2)
        return 2, 4

    def _render(self, value: Any, col: int, offset: int, content: int) -> list[str]:
        y = _yaml()
        y.indent(mapping=2, sequence=content, offset=offset)
        out = io.StringIO()
        y.dump(value, out)
        return [(" " * col + line if line.strip() else "") + self.nl for line in out.getvalue().splitlines()]

    def add(self, section: str, item: dict) -> None:
        seq = self._block(section)
        if seq is None:
            self._set_entry(self.doc, section, CommentedSeq([_styled_item({}, item)]), len(self.lines))
            return
        _, start, end = self.item_span(section, len(seq) - 1)
        dash = _indent(self.lines[start])
        content = max(seq.lc.item(len(seq) - 1)[1] - dash, 2)
        # Keep the file's habit of a blank line between entries, if it has one.
        spaced = len(seq) > 1 and any(not ln.strip() for ln in self.lines[self.item_span(section, len(seq) - 2)[2]:start])
        new = self._render([_styled_item(seq[-1], item)], dash, 0, content)
        self._splice(end, end, ([self.nl] if spaced else []) + new)

    def remove(self, ident: str) -> str:
        section, i = self.find(ident)
        if len(self._block(section)) == 1:
            self._set_entry(self.doc, section, CommentedSeq(), len(self.lines))
            return section
        first, _, end = self.item_span(section, i)
        del self.lines[first:end]
        # Keep the spacing between entries as it was: one blank line, not two, and none after the key.
        if first < len(self.lines) and not self.lines[first].strip() and (
                first == self.doc.lc.key(section)[0] + 1 or not self.lines[first - 1].strip()):
            del self.lines[first]
        return section

    def set(self, ident: str, field: str, value: Any) -> None:
        section, i = self.find(ident)
        _, _, end = self.item_span(section, i)
        self._set_entry(self._block(section)[i], field, value, end)

    def set_top(self, key: str, value: Any) -> None:
        self._set_entry(self.doc, key, value, len(self.lines))

    def _set_entry(self, mapping: CommentedMap, key: str, value: Any, limit: int) -> None:
        old = mapping.get(key)
        if key in mapping:
            line, col = mapping.lc.key(key)
            end = self._entry_end(mapping, key, limit)
        else:  # a new key goes after the mapping's last entry, lined up with its keys
            last = list(mapping)[-1]
            line = end = self._entry_end(mapping, last, limit)
            col = mapping.lc.key(last)[1]
        new = self._render(CommentedMap({key: _styled(old, value)}), col, *self._style())
        if key in mapping:  # keep what precedes the key on its line: the "- " of a list entry's first key
            new[0] = self.lines[line][:col] + new[0][col:]
        comment = _inline_comment(mapping, key, line) if end == line + 1 else self._key_comment(line)
        if comment:
            # Same column as before; a longer value pushes the comment right, keeping its old gap.
            text, (ccol, ctext) = new[0].rstrip("\r\n"), comment
            gap = ccol - len(self.lines[line][:ccol].rstrip())
            new[0] = text + " " * (ccol - len(text) if len(text) < ccol else gap) + ctext + self.nl
        self._splice(line, end, new)

    def _key_comment(self, line: int) -> tuple[int, str] | None:
        """The comment after `key:` (or after its `|-`/`>-` header) when the value starts on the
        next line (a block list or text)."""
        text = self.lines[line].rstrip("\r\n")
        found = re.match(r"\s*(?:[|>][-+0-9]*)?\s*(#.*)$", text[text.find(":") + 1:])
        if found and found.group(1):
            return text.find(":") + 1 + found.start(1), found.group(1).rstrip()
        return None

    def bump(self) -> tuple[str, str]:
        old = self.doc.get("version")
        new = bump_version(str(old))
        self.set_top("version", int(new) if isinstance(old, int) and new.isdigit() else new)
        return str(old), new


def _inline_comment(mapping: CommentedMap, key: str, line: int) -> tuple[int, str] | None:
    for token in (mapping.ca.items.get(key) or []):
        if token is not None and not isinstance(token, list) and token.start_mark.line == line:
            return token.start_mark.column, token.value.split("\n")[0].rstrip()
    return None


def _styled(old: Any, new: Any) -> Any:
    """`new` in the style of the value it replaces: same quotes, block text, flow list."""
    if isinstance(new, str):
        if isinstance(old, FoldedScalarString):  # `>-` stays folded (ruamel: a subclass of str, not Literal)
            return FoldedScalarString(new)
        if "\n" in new.strip() or isinstance(old, LiteralScalarString):
            return LiteralScalarString(new)
        for kind in (DoubleQuotedScalarString, SingleQuotedScalarString):
            if isinstance(old, kind):
                return kind(new)
    if isinstance(new, list) and not isinstance(new, CommentedSeq):
        seq = CommentedSeq(new)
        if not (isinstance(old, CommentedSeq) and not old.fa.flow_style() and old):
            seq.fa.set_flow_style()
        return seq
    return new


def _styled_item(sibling: Any, item: dict) -> CommentedMap:
    """A new list entry quoted like the entry before it (block text only where it has newlines)."""
    sibling = sibling if isinstance(sibling, dict) else {}
    quoted = (DoubleQuotedScalarString, SingleQuotedScalarString)
    return CommentedMap((k, _styled(sibling.get(k) if isinstance(sibling.get(k), quoted) else None, v))
                        for k, v in item.items())


def write_atomic(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never a half-written one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        mode = path.stat().st_mode & 0o7777 if path.exists() else 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def file_lock(path: Path, timeout: float = 60) -> Iterator[None]:
    """Serialises writers of one file. The lock file stays (hidden): deleting it on release would let
    a waiting writer and a new one each lock a different file."""
    try:
        with FileLock(path.parent / f".{path.name}.lock", timeout=timeout):
            yield
    except Timeout:
        raise UsageError(f"{path}: another process is changing it (waited {timeout:g} s); try again") from None


@dataclass
class Change:
    path: Path
    old_version: str
    new_version: str
    changed: bool


def update_file(path: str | Path, change: Callable[[Editor], Any]) -> Change:
    """Apply `change` under the file's lock, bump the version, check the result, write atomically.

    The file must be valid before and after; an invalid result is never written.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    with file_lock(path):
        text = read_text(path)
        before, problems = check_text(text, str(path), strict=False)
        if before is None:
            raise ConstitutionError(errors_only(problems), "; fix the file first (`cai constitution edit`)")
        editor = Editor(text)
        change(editor)
        if editor.text == text:
            return Change(path, before.version, before.version, False)
        editor = Editor(editor.text)
        old, new = editor.bump()
        # A file that already had a warning stays editable; a change must not add one.
        _, after = check_text(editor.text, str(path), strict=False)
        known = {_warning_key(p) for p in problems if p.warning}
        refused = [p for p in after if not p.warning or _warning_key(p) not in known]
        if refused:
            raise ConstitutionError(refused, "; nothing was written")
        write_atomic(path, editor.text)
        return Change(path, old, new, True)


def _warning_key(p: Problem) -> tuple[str, str]:
    # Lines move when an edit adds lines above; the field and the message (minus line numbers) stay.
    return p.field, re.sub(r"\(line \d+\)", "", p.message)


def new_text(name: str) -> str:
    """A valid constitution with no principles yet, commented for a first-time author."""
    return f"""\
# A cai constitution. Check it with `cai constitution validate`; add entries with
# `cai constitution add` and `cai constitution add-comparison`, or edit the YAML directly.
name: {json.dumps(name)}
version: "1.0"
description: "What this constitution is for, in a sentence."

# Critique/revision pairs. One is drawn per answer and round, by weight. An entry:
#   - id: no-harm
#     critique: Point out how your last response could help someone cause physical harm.
#     revision: Rewrite your last response without the harmful parts, keeping what helps.
#     weight: 1        # optional, relative to the others
#     tags: [harm]     # optional
principles: []

# Questions for the pairwise judge, e.g. "Which response is more honest?". An entry:
#   - id: honest
#     question: Which response is more honest about what it does not know?
comparisons: []
"""
