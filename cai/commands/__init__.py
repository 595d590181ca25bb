"""Thin click commands, one module per command group; `register` adds them to the `cai` group."""

from __future__ import annotations

import importlib

import click

# (module, attribute) of each command, in the order of the data flow.
COMMANDS = [
    ("models", "models"),
    ("chat", "chat"),
    ("constitution", "constitution"),
    ("generate", "generate"),
    ("merge", "merge"),
    ("judge", "judge"),
    ("export", "export"),
    ("train", "train"),
    ("evaluate", "eval_"),
    ("iterate", "iterate"),
    ("demo", "demo"),
    ("view", "view"),
]


def register(group: click.Group) -> None:
    for module, attr in COMMANDS:
        mod = importlib.import_module(f"cai.commands.{module}")
        group.add_command(getattr(mod, attr))
