"""Flags shared by several commands, declared once."""

from __future__ import annotations

import click

from cai.backends.registry import LOCAL, NAMES


def backend_choice(*, local: bool = False) -> click.Choice:
    """The registry's backend names (only those running the model in this process with `local`)."""
    return click.Choice(LOCAL if local else NAMES)


class ChunkSizeType(click.ParamType):
    """`--chunk-size`: a whole number of at least 1, or auto (sized from the engine: cai/window.py)."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif str(value).strip().lower() == "auto":
            return "auto"
        else:
            try:
                number = int(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is neither a whole number nor auto", param, ctx)
        if number < 1:
            self.fail(f"{number} is below 1", param, ctx)
        return number


def chunk_size_option(help: str):
    """--chunk-size N|auto, unset (None) so that a recipe's chunk_size still applies."""
    return click.option("--chunk-size", type=ChunkSizeType(), default=None, metavar="N|auto", help=help)


def vllm_engine_options(f):
    """The vLLM engine's settings for GPUs. Unset (None) so that a recipe still applies; a backend
    that cannot use one refuses it (exit 2)."""
    f = click.option("--quantization", default=None, metavar="METHOD",
                     help="vllm backend: quantization method of the checkpoint (awq, gptq, fp8, ...) "
                          "[default: what the checkpoint's config says].")(f)
    f = click.option("--max-model-len", type=click.IntRange(256), default=None, metavar="TOKENS",
                     help="vllm backend: context length (prompt plus reply) [default: 2048].")(f)
    f = click.option("--gpu-memory-fraction", type=click.FloatRange(0, 1, min_open=True), default=None,
                     metavar="F", help="vllm backend: share of each GPU's memory the engine takes, weights and "
                                       "KV cache (or CAI_VLLM_MEMORY) [default: 0.85].")(f)
    f = click.option("--data-parallel-size", type=click.IntRange(1), default=None, metavar="N",
                     help="vllm backend: copies of the model on this node's GPUs, each on --tensor-parallel-size "
                          "GPUs; requests are spread over them [default: 1].")(f)
    f = click.option("--tensor-parallel-size", type=click.IntRange(1), default=None, metavar="N",
                     help="vllm backend: GPUs one copy of the model is split over [default: 1].")(f)
    return f


def engine_options(f):
    """--backend/--base-url and the openai backend's limits, for any command that runs a model.

    The limit flags default to None so that a `--config` recipe (or the CAI_OPENAI_* variables)
    still applies when they are not given.
    """
    f = click.option("--max-retries", type=click.IntRange(0), default=None, metavar="N",
                     help="openai backend: retries of a failed request (429, 5xx, timeout, dropped connection) "
                          "before it counts as failed (or CAI_OPENAI_MAX_RETRIES) [default: 5].")(f)
    f = click.option("--concurrency", type=click.IntRange(1), default=None, metavar="N",
                     help="openai backend: requests in flight at once, over all servers "
                          "(or CAI_OPENAI_CONCURRENCY) [default: 64].")(f)
    f = click.option("--request-timeout", type=click.FloatRange(0, min_open=True), default=None, metavar="SECONDS",
                     help="openai backend: time limit of one attempt of a request (or CAI_OPENAI_TIMEOUT) "
                          "[default: 120].")(f)
    f = click.option("--speculative-tokens", type=click.IntRange(0, 16), default=None, metavar="N",
                     help="vllm backend: n-gram speculative decoding with N draft tokens per step, drafted from "
                          "the prompt (revisions copy long runs of it); 0 turns it off [default: 0].")(f)
    f = vllm_engine_options(f)
    f = click.option("--base-url", default=None, help="openai backend: server URL(s), comma-separated (or CAI_OPENAI_BASE_URL).")(f)
    f = click.option("--backend", type=backend_choice(), default=None, help="Inference engine (default: vllm where it imports, else hf).")(f)
    return f


def echo_lines(title: str, lines: list[str]) -> None:
    click.echo(click.style(title, bold=True))
    for line in lines:
        click.echo("  " + line)
