"""`cai train sft|dpo|reward|rl`: one TRL stage; flags override the recipe (see cai/train/common.py)."""

from __future__ import annotations

import click

from cai.commands.options import echo_lines
from cai.models import DEFAULT_MODEL


def _parse_set(values: tuple[str, ...]) -> dict:
    import yaml

    from cai.errors import UsageError

    out = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. --set warmup_steps=10")
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise UsageError(f"--set {item!r}: the value is not YAML: {exc}") from None
    return out


def common_options(f):
    """Flags every stage takes; each is None unless given, so the recipe's value stands."""
    opts = [
        click.option("--data", required=True, help="Training data: .jsonl/.json/.parquet, a datasets folder, or a run folder."),
        click.option("--model", default=DEFAULT_MODEL, show_default=True, help="Starting model: a known name or a model folder (any `cai train` output)."),
        click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder: the model, its card, logs, checkpoints."),
        click.option("--config", "config", default=None, help="Recipe YAML (or a bundled recipe name, e.g. sft-gpu) over the bundled default."),
        click.option("--max-steps", type=int, default=None, help="Optimizer steps (-1: run the epochs)."),
        click.option("--epochs", type=float, default=None, help="Epochs; lifts the recipe's step cap unless --max-steps is given."),
        click.option("--lora/--full", "lora", default=None, help="LoRA adapter or full fine-tune [recipe default: LoRA]."),
        click.option("--merge/--no-merge", "merge", default=None, help="Save the LoRA merged into a full model [default], or the adapter alone."),
        click.option("--resume", is_flag=True, help="Continue from the last checkpoint in OUT/checkpoints."),
        click.option("--seed", type=int, default=None, help="Seed of data order, LoRA init and sampling."),
        click.option("--learning-rate", type=float, default=None, help="Learning rate."),
        click.option("--batch-size", type=click.IntRange(1), default=None, help="Per-device batch size."),
        click.option("--grad-accum", type=click.IntRange(1), default=None, help="Gradient accumulation steps."),
        click.option("--max-length", type=click.IntRange(8), default=None, help="Token limit of a training sequence."),
        click.option("--save-steps", type=click.IntRange(1), default=None, help="Checkpoint every N steps."),
        click.option("--keep-flagged", "keep_flagged", is_flag=True, default=None, help="From a run folder: keep rows the quality checks flagged [default: left out]."),
        click.option("--device", type=click.Choice(["cpu", "gpu"]), default=None, help="Which bundled recipe is the base [default: gpu where CUDA is available]."),
        click.option("--set", "set_", multiple=True, metavar="KEY=VALUE", help="Any TRL config field or cai: setting, e.g. --set warmup_steps=10 (repeatable)."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _run(stage: str, flags: dict) -> None:
    from cai.train import run_stage, summary_lines

    data, model, out = flags.pop("data"), flags.pop("model"), flags.pop("out")
    config, resume, device = flags.pop("config"), flags.pop("resume"), flags.pop("device")
    overrides = _parse_set(flags.pop("set_"))
    renamed = {"epochs": "num_train_epochs", "batch_size": "per_device_train_batch_size",
               "grad_accum": "gradient_accumulation_steps"}
    for key, value in flags.items():
        if value is not None:
            overrides[renamed.get(key, key)] = value
    metrics = run_stage(stage, data, model, out, overrides, config, resume=resume, device=device,
                        log=lambda msg: click.echo(msg, err=True))
    echo_lines(f"train {stage}: done", summary_lines(metrics))


@click.group()
def train() -> None:
    """Train a model with TRL: sft → dpo, or reward → rl.

    Every output folder is a full model (LoRA merged in, bf16) that `cai chat`, `cai generate`,
    `cai eval` and the next `cai train` stage load as --model.
    """


@train.command()
@common_options
def sft(**flags) -> None:
    """Supervised fine-tuning on {"messages": [...]} rows (a run folder gives its revisions)."""
    _run("sft", flags)


@train.command()
@common_options
@click.option("--ref-model", default=None, help="Reference model [default: the starting model].")
@click.option("--beta", type=float, default=None, help="DPO beta: the pull towards the reference.")
def dpo(**flags) -> None:
    """DPO on {"prompt", "chosen", "rejected"} preference rows (a run folder gives its judged pairs)."""
    _run("dpo", flags)


@train.command()
@common_options
@click.option("--eval-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Share of pairs held out for the pairwise accuracy [default: 0.2 on CPU].")
def reward(**flags) -> None:
    """A reward model (one-score sequence classifier) on preference rows; reports held-out accuracy."""
    _run("reward", flags)


@train.command()
@common_options
@click.option("--algorithm", type=click.Choice(["grpo", "rloo"]), default=None, help="TRL trainer [default: grpo].")
@click.option("--reward", type=click.Choice(["model", "judge"]), default=None, help="Reward source [default: model].")
@click.option("--reward-model", default=None, help="A `cai train reward` output folder (with --reward model).")
@click.option("--judge-model", default=None, help="Judge model for --reward judge [default: the starting model].")
@click.option("--judge-backend", type=click.Choice(["hf", "vllm", "openai"]), default=None, help="Judge engine [default: hf, in process].")
@click.option("--judge-base-url", default=None, help="Server URL(s) for --judge-backend openai.")
@click.option("--constitution", default=None, help="Constitution whose comparison questions the judge asks [default: default].")
@click.option("--num-generations", type=click.IntRange(2), default=None, help="Completions sampled per prompt (the group).")
@click.option("--max-completion-length", type=click.IntRange(1), default=None, help="Token limit of each completion.")
def rl(**flags) -> None:
    """Online RL (GRPO or RLOO) on prompts, rewarded by a reward model or the AI judge."""
    _run("rl", flags)
