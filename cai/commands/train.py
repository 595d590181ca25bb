"""`cai train <stage>`: one TRL stage per command, made from the stage registry; flags override the recipe
(see cai/train/recipe.py)."""

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
        click.option("--data", multiple=True, metavar="PATH[:WEIGHT]",
                     help="Training data: .jsonl/.json/.parquet, a datasets folder, or a run folder. sft, dpo, kto: "
                          "repeat it to mix sources, each with a weight, its share of the rows (--data runs/cai:0.7 "
                          "--data helpful.jsonl:0.3), or PATH:rows=N for exactly N rows [default: the recipe's "
                          "datasets: list]."),
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


# Flags of the stages that mix sources (sft, dpo, kto: cai/train/mix.py).
MIX_OPTIONS = (
    click.option("--mix-rows", "mix_rows", type=click.IntRange(1), default=None,
                 help="Training rows of a weighted mix, split by the weights [default: the largest mix that repeats "
                      "no row]."),
    click.option("--oversample", "oversample", is_flag=True, default=None,
                 help="A source asked for more rows than it holds (its share of --mix-rows, or rows=N) repeats rows "
                      "[default: a share is capped at the source's rows, rows=N is refused]."),
)


def _run(stage: str, flags: dict) -> None:
    from cai.train import run_stage, summary_lines

    data, model, out = list(flags.pop("data")) or None, flags.pop("model"), flags.pop("out")
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
    """Train a model with TRL: sft → dpo (or kto), or reward → rl.

    Every output folder is a full model (LoRA merged in, bf16) that `cai chat`, `cai generate`,
    `cai eval` and the next `cai train` stage load as --model.
    """


def _command(spec) -> click.Command:
    """`cai train <stage>`: the flags every stage takes, then the stage's own."""

    def run(**flags) -> None:
        _run(spec.name, flags)

    f = run
    for opt in reversed(spec.options + (MIX_OPTIONS if spec.convert else ())):
        f = opt(f)
    return click.command(name=spec.name, help=spec.help)(common_options(f))


def _add_stages() -> None:
    from cai.train.registry import STAGES

    for spec in STAGES.values():
        train.add_command(_command(spec))


_add_stages()
