"""Constitutions: the critique/revision principles, the judge's comparison questions and the
few-shot examples a run is made from, kept as YAML files that people write and edit.

- `schema`: the models of a constitution and the draws a run makes from it (principle per round,
  comparison questions per pair), deterministic in their key.
- `validation`: every problem of a text at once, as `file:line: field: message`; errors make a
  file unusable, warnings (template syntax, near-duplicate principles) are likely mistakes.
- `loading`: bundled names, ./constitutions/ overriding them, paths; `load_constitution`.
- `editor`: line-level edits that keep a file's comments, order and quoting, and the safe ways
  of saving them (under the file's lock, version bumped, never an invalid result, atomically).
- `diff`: what changed between two constitutions, entry by entry.

Everything a caller needs is importable from `cai.constitution` itself.
"""

from cai.constitution.diff import DiffRow, diff_constitutions
from cai.constitution.editor import (
    Change,
    Editor,
    NotSaved,
    bump_version,
    create_file,
    new_text,
    save_text,
    update_file,
)
from cai.constitution.loading import (
    DEFAULT_CONSTITUTION,
    list_constitutions,
    load_constitution,
    read_text,
    resolve_constitution,
    validate_file,
)
from cai.constitution.schema import SECTIONS, Comparison, Constitution, FewShot, Principle
from cai.constitution.validation import NEAR_DUPLICATE, ConstitutionError, Problem, check_text, errors_only

__all__ = [
    "DEFAULT_CONSTITUTION", "NEAR_DUPLICATE", "SECTIONS", "Change", "Comparison", "Constitution", "ConstitutionError",
    "DiffRow", "Editor", "FewShot", "NotSaved", "Principle", "Problem", "bump_version", "check_text", "create_file",
    "diff_constitutions", "errors_only", "list_constitutions", "load_constitution", "new_text", "read_text",
    "resolve_constitution", "save_text", "update_file", "validate_file",
]
