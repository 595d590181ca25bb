"""What a recipe holds once loaded: the `cai:` settings every stage reads (`Settings`) and the merged
recipe itself (`Recipe`).

A leaf of `cai.train`: stage modules, `stage.py` and the writers import it, and it imports none of
them, nor the registry. The loader (`recipe.py`, which needs the registry) sits above them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cai.errors import UsageError


class Settings(BaseModel):
    """The `cai:` settings every stage reads. A stage with settings of its own subclasses this."""

    model_config = ConfigDict(extra="forbid")
    lora: bool = Field(True, description="Train a LoRA adapter (false: full fine-tune).")
    lora_r: int = Field(8, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    lora_targets: str | list[str] = Field("all-linear", description="Module names, or all-linear.")
    full_learning_rate: float | None = Field(
        None, gt=0, description="Used instead of the recipe's learning_rate for a full fine-tune, unless a "
        "--config file or a flag sets learning_rate: a full fine-tune wants a step ~10x smaller than LoRA.")
    merge: bool = Field(True, description="Save the LoRA merged into the base (false: the adapter alone).")
    save_dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    keep_flagged: bool = Field(False, description="From a run folder: keep rows whose answer the quality checks "
                               "flagged (left out by default, as `cai export` does).")
    # Process-wide memory settings (cai/train/memory.py says what each saved); None: the library's own.
    malloc_mmap_threshold: int | None = Field(
        # 32 MiB is where glibc's own sliding threshold stops: a larger value keeps more on the heap, not less
        None, ge=4096, le=32 * 1024 * 1024, description="Bytes: glibc maps allocations this large on their own and "
        "returns them to the OS when freed, instead of keeping freed tensors' memory resident.")
    logprob_chunk: int | None = Field(
        None, ge=256, description="Vocabulary columns per tile of TRL's chunked log-probabilities (TRL: 32768); "
        "narrower tiles need less memory where the tiles run as torch operations (CPUs).")

    def recorded(self) -> dict:
        """The settings this stage's recipe.yaml and card record (a stage may drop ones it ignores)."""
        return self.model_dump()


class MixSettings(Settings):
    """The settings of a stage that mixes several sources (sft, dpo, kto; cai/train/mix.py)."""

    mix_rows: int | None = Field(
        None, ge=1, description="sft, dpo, kto with weighted sources: training rows of the whole mix, split by "
        "the weights (default: the largest mix that repeats no row). A source whose share asks for more rows than "
        "it holds gives all its rows once, unless `oversample`.")
    oversample: bool = Field(
        False, description="sft, dpo, kto: a source asked for more rows than it holds (its share of `mix_rows`, or "
        "`rows: N`) repeats rows to give them (each row once before any twice) instead of being capped (a share) "
        "or refused (`rows: N`).")


class SoftLabelSettings(Settings):
    """The judge's probabilities as labels (dpo, reward; cai/train/soft.py)."""

    soft_labels: bool = Field(
        False, description="dpo, reward: each pair's p_chosen is the target probability that chosen beats rejected "
        "(binary cross-entropy against p instead of against 1; pairs without p_chosen train as hard labels). "
        "Default: hard labels.")
    min_confidence: float | None = Field(
        None, ge=0.0, le=0.5, description="dpo, reward: keep only pairs the judge was this sure of, "
        "|p_chosen - 0.5| >= X (as cai export --min-confidence; pairs without p_chosen are kept).")


@dataclass
class Recipe:
    """A stage's merged and checked recipe, as `load_recipe` (recipe.py) builds it."""

    stage: str
    trl: dict
    cai: Any  # the stage's Settings
    config_cls: type  # the TRL config class these settings choose (the stage's `config_class`)
    sources: list[str] = field(default_factory=list)
    # The recipe's `datasets:` list (`{path, weight | rows, split, name}` each, checked by cai/train/mix.py);
    # a run records the sources it trained on here, so `--config DIR/recipe.yaml` repeats them.
    datasets: list[dict] | None = None

    def as_dict(self) -> dict:
        return {**self.trl, **({"datasets": self.datasets} if self.datasets else {}), "cai": self.cai.recorded()}

    def trl_args(self, output_dir: str | Path, **extra):
        cls = self.config_cls
        try:
            return cls(**{**self.trl, **extra}, output_dir=str(output_dir))
        except (ValueError, TypeError) as exc:
            raise UsageError(f"recipe ({' < '.join(self.sources)}): {exc}") from None
