"""Flags shared by several commands, declared once."""

from __future__ import annotations

import click

from cai.backends import BACKENDS


def engine_options(f):
    """--model/--backend/--base-url for any command that runs a model."""
    f = click.option("--base-url", default=None, help="openai backend: server URL(s), comma-separated (or CAI_OPENAI_BASE_URL).")(f)
    f = click.option("--backend", type=click.Choice(BACKENDS), default=None, help="Inference engine (default: vllm where installed, else hf).")(f)
    return f


def echo_lines(title: str, lines: list[str]) -> None:
    click.echo(click.style(title, bold=True))
    for line in lines:
        click.echo("  " + line)
