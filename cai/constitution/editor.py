"""Changing a constitution file line by line, so a user's comments, key order and quoting survive.

`Editor` locates entries through the round-trip parse and rewrites only the lines an edit must
(rendered by ruamel.yaml in the file's own style); `update_file` and `save_text` wrap an edit in the
file's lock, bump the version, refuse an invalid result and write atomically.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import (
    DoubleQuotedScalarString,
    FoldedScalarString,
    LiteralScalarString,
    SingleQuotedScalarString,
)

from cai.atomic import file_lock, write_atomic
from cai.constitution.loading import read_text
from cai.constitution.schema import SECTIONS
from cai.constitution.validation import ConstitutionError, Problem, check_text, errors_only, parse_yaml, round_trip_yaml
from cai.errors import UsageError


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
        doc, problems = parse_yaml(text, "<text>")
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
        y = round_trip_yaml()
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
        # A new key has no comment of its own (and may start past the file's last line).
        comment = None if key not in mapping else (
            _inline_comment(mapping, key, line) if end == line + 1 else self._key_comment(line))
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


@dataclass
class Change:
    path: Path
    old_version: str | None  # None: a file saved whole (`save_text`) whose old text had no readable version
    new_version: str
    changed: bool


class NotSaved(UsageError):
    """`save_text` refused a text: `reason` says why, `problems` what is wrong with the text."""

    def __init__(self, reason: str, problems: list[Problem]):
        self.reason, self.problems = reason, problems
        super().__init__(f"not saved: {reason}")


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


def save_text(path: Path, original: str, edited: str) -> Change:
    """Replace the whole file with `edited` (`cai constitution edit`), under the file's lock.

    Refused (NotSaved) when the file no longer holds `original`, since whoever changed it meanwhile
    would lose their change, or when `edited` has any problem, warnings included. Unlike
    `update_file`, the old text may be invalid, even unparsable: repairing a broken file is what a
    whole-text edit is for. A version the user changed by hand is kept; otherwise it is bumped.
    """
    with file_lock(path):
        if read_text(path) != original:
            raise NotSaved(f"{path} changed while you were editing", [])
        after, problems = check_text(edited, str(path))
        if after is None:
            raise NotSaved(f"{path} would be invalid", problems)
        editor = Editor(edited)
        try:
            before = str(Editor(original).doc.get("version"))
        except UsageError:
            before = None
        old, new = (before, after.version) if before != after.version else editor.bump()
        write_atomic(path, editor.text)
    return Change(path, old, new, True)


def create_file(path: Path, text: str) -> None:
    """Write a new constitution file; UsageError when one is there already (or appears meanwhile)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path):
        if path.exists():
            raise UsageError(f"{path} already exists")
        write_atomic(path, text)


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
