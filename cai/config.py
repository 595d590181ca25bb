"""Stage configs: defaults, then a `--config` YAML recipe, then command-line flags.

Unknown keys in a recipe are an error, never silently ignored; a bad value names its field.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cai.backends.base import SamplingParams
from cai.backends.registry import NAMES
from cai.errors import UsageError
from cai.models import DEFAULT_MODEL
from cai.window import ChunkSize

C = TypeVar("C", bound=BaseModel)
BackendName = Literal[NAMES]  # type: ignore[valid-type]  # the registry's names
# Settings of one engine (refused by a backend that cannot use them), as opposed to the server
# limits any command hands to whichever engine it starts.
ENGINE_SETTINGS = ("max_model_len", "tensor_parallel_size", "data_parallel_size", "gpu_memory_fraction",
                   "quantization")


class StepSampling(BaseModel):
    """Sampling for one step of the loop (the seed and n come from the run)."""

    model_config = ConfigDict(extra="forbid")
    max_tokens: int = Field(200, ge=1)
    temperature: float = Field(0.7, ge=0.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)

    def params(self, *, n: int = 1, seed: int | None = None) -> SamplingParams:
        return SamplingParams(max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p, n=n, seed=seed)


class EngineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(DEFAULT_MODEL, description="A known model name or a local model folder.")
    backend: BackendName | None = Field(None, description="Default: vllm where it imports, else hf.")
    base_url: str | None = Field(None, description="openai backend: server URL(s), comma-separated.")
    max_model_len: int = Field(2048, ge=256, description="vLLM context length; the default model's limit is 8k.")
    # vLLM's engine on GPUs (None: vLLM's default, or cai's for this machine). Another backend
    # refuses them, so a recipe never runs with a setting silently lost.
    tensor_parallel_size: int | None = Field(None, ge=1, description="vLLM: GPUs one copy of the model is split "
                                             "over (a model too big for one GPU).")
    data_parallel_size: int | None = Field(None, ge=1, description="vLLM: copies of the model on a node's GPUs "
                                           "(each tensor_parallel_size GPUs), requests spread over them.")
    gpu_memory_fraction: float | None = Field(None, gt=0, le=1, description="vLLM: share of each GPU's memory "
                                              "the engine takes (weights and KV cache) [default: 0.85].")
    quantization: str | None = Field(None, description="vLLM's quantization method for AWQ/GPTQ/FP8 checkpoints "
                                     "(awq, gptq, fp8, ...); default: what the checkpoint says.")
    speculative_tokens: int = Field(0, ge=0, le=16, description="vLLM: n-gram speculative decoding, draft tokens per "
                                                                "step (0: off).")
    # The openai backend's limits. None: CAI_OPENAI_TIMEOUT / _CONCURRENCY / _MAX_RETRIES where set,
    # else the backend's defaults (120 s, 64 requests in flight, 5 retries).
    request_timeout: float | None = Field(None, gt=0, description="openai backend: seconds per attempt of a request.")
    concurrency: int | None = Field(None, ge=1, description="openai backend: requests in flight at once.")
    max_retries: int | None = Field(None, ge=0, description="openai backend: retries of a failed request.")

    def backend_options(self) -> dict:
        """Every engine setting; `load_backend` hands each engine the ones it takes (the backend may
        be chosen later, from CAI_BACKEND or what imports)."""
        opts = {"base_url": self.base_url, "max_model_len": self.max_model_len,
                "speculative_tokens": self.speculative_tokens or None, "timeout": self.request_timeout,
                "concurrency": self.concurrency, "max_retries": self.max_retries,
                **{k: getattr(self, k) for k in ENGINE_SETTINGS}}
        return {k: v for k, v in opts.items() if v is not None}

    @model_validator(mode="after")
    def _backend_takes_its_settings(self):
        """With the backend named, a setting it cannot use fails with the recipe, before any output
        folder is made (else when the engine is chosen: `load_backend` checks the same)."""
        if self.backend in NAMES:
            from cai.backends import _engine_options

            _engine_options(self.backend, self.backend_options(), notes=False)
        return self

    def engine_settings(self) -> dict:
        """The engine settings given (flag or recipe), as a run records them."""
        return {k: getattr(self, k) for k in ENGINE_SETTINGS
                if k in self.model_fields_set and getattr(self, k) is not None}


class GenerateConfig(EngineConfig):
    constitution: str = Field("default", description="A bundled constitution name or a YAML path.")
    prompts: str | None = Field(None, description="Prompt set path; default: the bundled red-team set.")
    prompt_field: str = "prompt"
    on_bad_row: Literal["skip", "fail"] = "fail"
    rounds: int = Field(2, ge=0, description="Critique → revision rounds per answer.")
    samples: int = Field(1, ge=1, description="Answers sampled per prompt (>= 2 for judged sample pairs).")
    limit: int | None = Field(None, ge=1)
    seed: int = 0
    run_dir: str | None = Field(None, description="Default: runs/<constitution>-<model>.")
    templates: str | None = Field(None, description="A folder whose templates override the bundled ones.")
    chunk_size: ChunkSize = Field("auto", description="Prompts in flight at once (rows are flushed after every "
                                  "engine step); auto: sized from the engine's capacity (cai/window.py).")
    few_shot: int = Field(2, ge=0, description="At most this many of the constitution's examples are prepended.")
    answer: StepSampling = StepSampling(max_tokens=200)
    critique: StepSampling = StepSampling(max_tokens=120)
    revision: StepSampling = StepSampling(max_tokens=200)
    force_new: bool = False
    # A critic stronger than the policy: the policy writes the answers, this model the critiques and
    # revisions, in the same conversations (how Constitutional AI is used with small policies).
    reviser_model: str | None = Field(None, description="Model that writes critiques and revisions; default: --model.")
    reviser_backend: BackendName | None = Field(None, description="Engine of the reviser; default: the policy's.")
    reviser_base_url: str | None = Field(None, description="openai reviser: server URL(s), comma-separated.")
    # Which prompts are generated (cai/dedup.py, cai/decontaminate.py), decided before any engine
    # starts and the same in every shard: dedup, then decontamination, then the shard's share.
    dedup: Literal["exact", "near", "none"] = Field("exact", description="Leave out duplicate prompts: exact (same "
                                                    "text up to case, spacing and Unicode form), near (also MinHash "
                                                    "Jaccard >= 0.8 of 3-token shingles) or none.")
    decontaminate: list[str] = Field(default_factory=list, description="Prompt sets (eval sets) whose prompts, and "
                                     "prompts overlapping them, are left out.")
    shard: str | None = Field(None, description="I/N: only the prompts of shard I of N (by a hash of the prompt), "
                              "for N jobs merged by `cai merge`.")

    @field_validator("shard", mode="before")
    @classmethod
    def _shard(cls, value):
        from cai.inputs import parse_shard

        if value is None:
            return None
        try:
            return str(parse_shard(value))
        except UsageError as exc:
            raise ValueError(str(exc)) from None

    def _reviser_takes(self) -> set[str]:
        """The engine settings given that go to the reviser's engine rather than the policy's.

        One process runs at most one vLLM engine, so those settings are one engine's: the policy's
        when its backend takes them, else a reviser's on its own backend that does (a policy on a
        server, the reviser on local GPUs). The server limits are shared by both, as before."""
        given = {k for k in ENGINE_SETTINGS if getattr(self, k) is not None and k in self.model_fields_set}
        if not given or not self.reviser_backend or not self.reviser_name or self.backend not in (None, *NAMES):
            return set()
        from cai.backends import resolve_backend_name
        from cai.backends.registry import options_model

        policy = options_model(resolve_backend_name(self.backend)).model_fields
        reviser = options_model(self.reviser_backend).model_fields
        return {k for k in given if k not in policy and k in reviser}

    def backend_options(self) -> dict:
        moved = self._reviser_takes()
        return {k: v for k, v in super().backend_options().items() if k not in moved}

    def reviser_options(self) -> dict:
        """The reviser's engine settings: the policy's server limits, its own server URLs when it has
        them, and the engine settings that are its own (see `_reviser_takes`)."""
        moved = self._reviser_takes()
        opts = {k: v for k, v in super().backend_options().items()
                if k in moved or k not in ENGINE_SETTINGS or k not in self.model_fields_set}
        if self.reviser_base_url:
            opts["base_url"] = self.reviser_base_url
        return opts

    @property
    def reviser_name(self) -> str | None:
        """The reviser's model: --reviser-model, or the policy's model when only the reviser's engine
        or server is given (the same model served elsewhere)."""
        if self.reviser_model:
            return self.reviser_model
        return self.model if (self.reviser_backend or self.reviser_base_url) else None


def load_config(cls: type[C], config_file: str | Path | None, overrides: dict) -> C:
    """Merge defaults < YAML recipe < flags (flags left unset are None and do not override)."""
    data: dict = {}
    if config_file:
        path = Path(config_file)
        if not path.exists():
            raise UsageError(f"--config {path}: no such file")
        from cai.textfiles import read_recipe_file

        data = read_recipe_file(path)
        unknown = sorted(set(data) - set(cls.model_fields))
        if unknown:
            raise UsageError(f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(cls.model_fields)}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        where = f"{config_file}: " if config_file else ""
        msgs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"{where}{msgs}") from None
