"""`cai chat`: one answer per prompt, the quickest check that a model and a backend work."""

from __future__ import annotations

import click

from cai.commands.options import engine_options
from cai.models import DEFAULT_MODEL


@click.command()
@click.argument("prompts", nargs=-1, required=True)
@click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Model name or local folder.")
@engine_options
@click.option("--max-tokens", type=click.IntRange(1), default=200, show_default=True)
@click.option("--temperature", type=click.FloatRange(0), default=0.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--system", default=None, help="A system message for every prompt.")
def chat(prompts, max_tokens, temperature, seed, system, **engine) -> None:
    """Answer each PROMPT with MODEL."""
    from cai.backends import load_backend
    from cai.backends.base import SamplingParams
    from cai.config import EngineConfig

    cfg = EngineConfig.model_validate({k: v for k, v in engine.items() if v is not None})
    be = load_backend(cfg.backend, cfg.model, **cfg.backend_options())
    convs = [([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": p}] for p in prompts]
    outs = be.chat(convs, SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed))
    failed = 0
    for p, out in zip(prompts, outs):
        c = out[0]
        if len(prompts) > 1:
            click.echo(click.style(f"> {p}", bold=True))
        if c.finish_reason == "error":
            failed += 1
            click.echo(f"[error: {c.error}]", err=True)
        else:
            click.echo(c.text.strip())
        if len(prompts) > 1:
            click.echo()
    if failed:
        raise SystemExit(1)
