"""Where the bundled constitutions, templates and data sets live.

In a checkout they are the top-level `constitutions/` and `prompts/` folders; an installed wheel
carries them as the packages `cai._constitutions` and `cai._prompts` (see pyproject.toml), so
`cai` finds its defaults after a plain `pip install`.
"""

from __future__ import annotations

from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
_PACKAGED = {"constitutions": "cai._constitutions", "prompts": "cai._prompts", "recipes": "cai._recipes"}


def bundled_dir(kind: str) -> Path:
    """`kind`: "constitutions", "prompts" (Jinja2 templates), "recipes" (training) or "data"."""
    if kind == "data":
        return Path(__file__).resolve().parent / "data"
    local = _REPO / kind
    if local.is_dir():
        return local
    # An installed wheel: the folders sit inside the package as cai/_<kind> (no __init__.py, so
    # importlib.resources would hand back a MultiplexedPath; the plain path is what we need).
    return Path(__file__).resolve().parent / _PACKAGED[kind].split(".")[-1]


def bundled_file(kind: str, name: str) -> Path:
    return bundled_dir(kind) / name
