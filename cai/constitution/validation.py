"""Checking a constitution's text: every problem at once, each as `file:line: field: message`.

Two kinds: errors (bad YAML, a missing field, a wrong type, a duplicate id, ...) make a file
unusable; warnings (template syntax in a text, two near-identical principles) are likely mistakes
that `cai constitution validate` and the editing commands refuse, while a run only prints them:
the text is sent as it is, never rendered. The round-trip parse of ruamel.yaml supplies the line
numbers.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from cai.constitution.schema import ITEM_MODELS, SECTIONS, Constitution
from cai.errors import UsageError

_TEMPLATE = re.compile(r"\{\{|\{%|\{#")
NEAR_DUPLICATE = 0.9  # share of words in common above which two texts count as one principle


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


def round_trip_yaml() -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096  # never re-wrap a long principle onto several lines
    return y


def parse_yaml(text: str, file: str) -> tuple[Any, list[Problem]]:
    from cai.textfiles import alias_line

    line = alias_line(text)
    if line is not None:  # a few hundred bytes of nested aliases expand past any memory
        return None, [Problem(file, line, "yaml", "aliases (*name) are not allowed in a constitution; write the "
                              "value out")]
    try:
        return round_trip_yaml().load(text), []
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
        model = ITEM_MODELS.get(loc[0], Constitution) if len(loc) == 3 else Constitution
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
    comps = data.get("comparisons")
    weights = [c.get("weight", 1) for c in comps if isinstance(c, dict)] if isinstance(comps, list) else []
    if weights and all(isinstance(w, int | float) and not isinstance(w, bool) and w == 0 for w in weights):
        # The model refuses this too, but without a location; said here with the line.
        problems.append(Problem(file, _line(doc, ("comparisons",)), "comparisons",
                                "every comparison has weight 0: at least one must be drawn"))
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
    doc, problems = parse_yaml(text, file)
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
