"""What a training stage declares (`Stage`) and what it is handed when it runs (`Job`).

A stage module builds one `Stage` and the registry (`cai/train/registry.py`) lists it; `run_stage`,
`cai train <stage>`, recipe loading and the model card read everything else from that object.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cai.export import Format
from cai.train.data import DataInfo
from cai.train.settings import Recipe, Settings
from cai.train.weights import lora_config


def _no_check(recipe: Recipe) -> None:
    return None


@dataclass(frozen=True)
class Stage:
    """One way of training: its data, its TRL trainer and config, its settings and its flags."""

    name: str
    help: str  # the `cai train <name>` help line
    data: Format  # the rows it reads from a run folder (as `cai export --format` writes them)
    data_help: str  # what a row looks like, for docs and errors
    trainer: str  # TRL trainer class name; its config is the same name with Config
    rows: Callable[[list[dict], str], list[dict]]  # raw rows, where → the rows the trainer gets
    build: Callable[[Job], Any]  # → the TRL trainer
    settings: type[Settings] = Settings  # its `cai:` section
    model_class: str = "AutoModelForCausalLM"  # the transformers class of the saved model
    task: str = "CAUSAL_LM"  # PEFT task type of its LoRA
    load_kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    fallback: Format | None = None  # the rows to read from a run folder that has no `data` yet
    evaluate: Callable[[Any, Job], dict] | None = None  # figures after training (metrics.json, card)
    options: tuple = ()  # click options of its command, beyond the ones every stage takes
    card_rows: Callable[[Any, dict], list[tuple[str, str]]] | None = None  # (settings, metrics) → card lines
    trainer_for: Callable[[Any], str] | None = None  # when the settings choose the trainer (rl: algorithm)
    check: Callable[[Recipe], None] = _no_check  # refuse a recipe TRL would only fail on later
    # Mixing sources (cai/train/mix.py): a stage with `convert` reads every source as a `datasets.Dataset`
    # and may mix several; one without (reward, rl) reads one source as a list of rows, through `rows`.
    columns: tuple[tuple[str, ...], ...] = ()  # a source must have one of these sets of columns
    convert: Callable[..., list[dict]] | None = None  # (rows, where, start) → trainer rows; batch by batch
    finish: Callable[[Any], Any] | None = None  # the mixed Dataset → the one the trainer gets (sft: the split)

    def trainer_name(self, settings: Settings) -> str:
        return self.trainer_for(settings) if self.trainer_for else self.trainer

    def config_class(self, settings: Settings):
        import trl

        return getattr(trl, self.trainer_name(settings).removesuffix("Trainer") + "Config")

    def trainer_names(self) -> list[str]:
        """Every trainer this stage may use (for docs and the settings/fields clash test)."""
        if not self.trainer_for:
            return [self.trainer]
        choices = self.settings.model_fields["algorithm"].annotation.__args__
        return [self.trainer_for(self.settings(algorithm=a)) for a in choices]


@dataclass
class Job:
    """One stage run, as the stage's `build` and `evaluate` see it."""

    stage: str
    recipe: Recipe
    args: Any  # the TRL config
    model: str  # as the user named it
    model_dir: Path
    tokenizer: Any
    rows: Any  # list[dict], or a datasets.Dataset (stages that mix sources); `train_dataset(rows)` gives TRL's
    data: DataInfo
    out: Path
    log: Any = print
    extra: dict = field(default_factory=dict)  # figures a stage adds to metrics.json and the card

    @property
    def cai(self):
        return self.recipe.cai

    def peft_config(self, task_type: str):
        return lora_config(self.cai, task_type) if self.cai.lora else None

    def dtype(self):
        """The dtype of models we load ourselves (reference, reward): the recipe's, else float32."""
        import torch

        want = (self.args.model_init_kwargs or {}).get("dtype", "float32")
        return getattr(torch, want) if isinstance(want, str) and want != "auto" else want
