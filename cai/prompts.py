"""Jinja2 templates for every request cai sends to a model.

Templates come from the bundled `prompts/` folder, or from a user's `--templates DIR` (which
overrides by file name). The environment is sandboxed and text from a constitution or a prompt set
is only ever passed in as a variable, so `{{ ... }}` inside a principle stays literal text.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

from jinja2 import FileSystemLoader, StrictUndefined, TemplateError, TemplateNotFound
from jinja2.sandbox import SandboxedEnvironment

from cai.errors import UsageError
from cai.resources import bundled_dir

TEMPLATES = ("critique.j2", "revision.j2", "judge.j2", "judge_cot.j2", "refusal.j2")


class Templates:
    def __init__(self, override_dir: str | Path | None = None):
        dirs = [str(bundled_dir("prompts"))]
        if override_dir is not None:
            override = Path(override_dir)
            if not override.is_dir():
                raise UsageError(f"--templates {override}: not a folder")
            from cai.textfiles import read_utf8

            for f in sorted(override.glob("*.j2")):  # jinja2 would fail on the first render, as exit 1
                read_utf8(f)
            dirs.insert(0, str(override))
        self.dirs = dirs
        self.env = SandboxedEnvironment(
            loader=FileSystemLoader(dirs),
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    @lru_cache(maxsize=None)
    def _template(self, name: str):
        try:
            return self.env.get_template(name)
        except TemplateNotFound:
            raise UsageError(f"template {name} not found in {', '.join(self.dirs)}") from None
        except TemplateError as exc:
            raise UsageError(f"template {name}: {exc}") from None

    def render(self, name: str, **variables) -> str:
        try:
            return self._template(name).render(**variables).strip()
        except TemplateError as exc:
            raise UsageError(f"template {name}: {exc}") from None

    def source_of(self, name: str) -> Path:
        for d in self.dirs:
            if (Path(d) / name).exists():
                return Path(d) / name
        raise UsageError(f"template {name} not found in {', '.join(self.dirs)}")

    def fingerprint(self, names=TEMPLATES) -> dict[str, str]:
        """Template name → short hash of its text, recorded in each row's provenance."""
        return {n: hashlib.sha256(self.source_of(n).read_bytes()).hexdigest()[:12] for n in names}
