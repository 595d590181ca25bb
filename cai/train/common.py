"""What every training stage shares: the recipe, the data, LoRA, and the output folder with its card.

A recipe is a YAML mapping of TRL config fields (`SFTConfig`, `DPOConfig`, ...) plus a `cai:`
section for what TRL does not cover (LoRA, merging, the RL reward). Three layers are merged, later
ones winning: the bundled `<stage>-cpu.yaml` or `<stage>-gpu.yaml`, then `--config FILE`, then
flags. A key that is neither a field of the stage's TRL config nor a `cai:` setting is an error.

The output folder always holds a model that transformers, vLLM and the next `cai train` stage load
as they are: with LoRA the adapter is merged into the base and saved in bf16 (the adapter itself
goes to `adapter/`); `--no-merge` writes the adapter alone, for PEFT users.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cai.errors import UsageError

STAGES = ("sft", "dpo", "reward", "rl")
TRAINERS = {"sft": "SFT", "dpo": "DPO", "reward": "Reward", "grpo": "GRPO", "rloo": "RLOO"}
CHECKPOINTS = "checkpoints"
ADAPTER = "adapter"
METRICS = "metrics.json"
LOG = "train_log.jsonl"
RECIPE = "recipe.yaml"
# TRL fields that `cai train` sets from its own flags; a recipe setting them would fight --out/--resume.
RESERVED = {"output_dir": "--out", "resume_from_checkpoint": "--resume"}


class CaiOptions(BaseModel):
    """The `cai:` section of a recipe: settings TRL's configs don't have."""

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
    ref_model: str | None = Field(None, description="dpo: reference model (default: the starting model).")
    eval_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="reward: share of pairs held out (>= 1 pair).")
    algorithm: Literal["grpo", "rloo"] = Field("grpo", description="rl: TRL's GRPOTrainer or RLOOTrainer.")
    reward: Literal["model", "judge"] = Field("model", description="rl: a trained reward model or the AI judge.")
    reward_model: str | None = Field(None, description="rl: folder of a `cai train reward` output.")
    judge_model: str | None = Field(None, description="rl: the judge model (default: the starting model).")
    judge_backend: str = Field("hf", description="rl: engine of the judge; hf runs it in the training process.")
    judge_base_url: str | None = Field(None, description="rl: server URL(s) for judge_backend openai.")
    judge_ensemble: int = Field(1, ge=1, description="rl: comparison questions averaged per completion.")
    keep_flagged: bool = Field(False, description="From a run folder: keep rows whose answer the quality checks "
                               "flagged (left out by default, as `cai export` does).")
    filter: Literal["none", "judged"] = Field("none", description="sft from a judged run folder: `judged` keeps only "
                                              "rows whose final revision the judge preferred (rejection-sampled SFT).")
    constitution: str | None = Field(
        None, description="rl: the constitution whose comparisons the judge asks; default: the run's own "
        "(run.yaml snapshot) for a run folder, else the one the data's provenance columns name, else `default`.")


CAI_KEYS = frozenset(CaiOptions.model_fields)
_SHARED = ("lora", "lora_r", "lora_alpha", "lora_dropout", "lora_targets", "full_learning_rate", "merge", "save_dtype",
           "keep_flagged")
# The cai settings each stage reads; the others are accepted (one recipe may serve several stages)
# but left out of the stage's recorded recipe.
STAGE_KEYS = {
    "sft": _SHARED + ("filter",),
    "dpo": _SHARED + ("ref_model",),
    "reward": _SHARED + ("eval_fraction",),
    "rl": _SHARED + ("algorithm", "reward", "reward_model", "judge_model", "judge_backend", "judge_base_url",
                     "judge_ensemble", "constitution"),
}


def config_class(stage: str, algorithm: str = "grpo"):
    import trl

    key = algorithm if stage == "rl" else stage
    return getattr(trl, f"{TRAINERS[key]}Config")


def default_device() -> str:
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def bundled_recipe(stage: str, device: str | None = None) -> Path:
    from cai.resources import bundled_dir

    return bundled_dir("recipes") / f"{stage}-{device or default_device()}.yaml"


def read_recipe(path: str | Path) -> dict:
    """A recipe file as a dict; `path` may also be a bundled recipe's name (`sft-gpu`)."""
    p = Path(path)
    if not p.exists() and p.suffix == "" and os.sep not in str(path):
        from cai.resources import bundled_dir

        p = bundled_dir("recipes") / f"{path}.yaml"
    if not p.is_file():
        raise UsageError(f"--config {path}: no such recipe file")
    from cai.textfiles import read_utf8, refuse_aliases

    text = read_utf8(p)
    refuse_aliases(text, str(p))
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise UsageError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError(f"{p}: a recipe is a mapping of settings")
    return data


def split_layer(data: dict, where: str) -> tuple[dict, dict]:
    """One layer → (TRL settings, cai settings). A flat cai key is accepted too (flags use them)."""
    trl_part, cai_part = {}, dict(data.get("cai") or {})
    if not isinstance(cai_part, dict):
        raise UsageError(f"{where}: `cai:` must be a mapping")
    for k, v in data.items():
        if k == "cai":
            continue
        (cai_part if k in CAI_KEYS else trl_part)[k] = v
    return trl_part, cai_part


@dataclass
class Recipe:
    stage: str
    trl: dict
    cai: CaiOptions
    sources: list[str] = field(default_factory=list)

    @property
    def config_cls(self):
        return config_class(self.stage, self.cai.algorithm)

    def as_dict(self) -> dict:
        keys = set(STAGE_KEYS[self.stage])
        if self.stage == "rl":
            keys -= {"reward_model"} if self.cai.reward == "judge" else {k for k in keys if k.startswith("judge_") or k == "constitution"}
        return {**self.trl, "cai": {k: v for k, v in self.cai.model_dump().items() if k in keys}}

    def trl_args(self, output_dir: str | Path, **extra):
        cls = self.config_cls
        try:
            return cls(**{**self.trl, **extra}, output_dir=str(output_dir))
        except (ValueError, TypeError) as exc:
            raise UsageError(f"recipe ({' < '.join(self.sources)}): {exc}") from None


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    """YAML 1.1 reads `2e-4` as a string; TrainingArguments does not convert, so we do for floats."""
    kind = str(f.type)
    if isinstance(value, str) and "float" in kind:
        try:
            return float(value)
        except ValueError:
            return value
    return value


def check_keys(stage: str, algorithm: str, trl_part: dict, where: str) -> dict:
    cls = config_class(stage, algorithm)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    out = {}
    for k, v in trl_part.items():
        if k in RESERVED:
            raise UsageError(f"{where}: `{k}` is set by {RESERVED[k]}, not by a recipe")
        if k not in fields:
            near = difflib.get_close_matches(k, list(fields) + sorted(CAI_KEYS), n=3)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise UsageError(f"{where}: unknown key {k!r} for {cls.__name__} or the cai: section{hint}")
        out[k] = _coerce(fields[k], v)
    return out


def load_recipe(stage: str, config: str | Path | None = None, overrides: dict | None = None,
                *, device: str | None = None) -> Recipe:
    """Merge bundled defaults < `config` < `overrides` and check every key."""
    if stage not in STAGES:
        raise UsageError(f"unknown stage {stage!r}: one of {', '.join(STAGES)}")
    base = bundled_recipe(stage, device)
    layers = [(str(base), read_recipe(base))]
    if config:
        layers.append((str(config), read_recipe(config)))
    if overrides:
        layers.append(("flags", {k: v for k, v in overrides.items() if v is not None}))
    trl_all: dict = {}
    cai_all: dict = {}
    lr_from_user = False
    for i, (where, data) in enumerate(layers):
        trl_part, cai_part = split_layer(data, where)
        # A layer that asks for epochs means epochs: an earlier layer's step cap would silently win.
        if "num_train_epochs" in trl_part and "max_steps" not in trl_part:
            trl_part["max_steps"] = -1
        lr_from_user |= i > 0 and "learning_rate" in trl_part
        trl_all.update(trl_part)
        cai_all.update(cai_part)
    try:
        cai = CaiOptions.model_validate(cai_all)
    except ValidationError as exc:
        msgs = "; ".join(f"cai.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"recipe ({' < '.join(w for w, _ in layers)}): {msgs}") from None
    if not cai.lora and cai.full_learning_rate and not lr_from_user:
        trl_all["learning_rate"] = cai.full_learning_rate
    sources = [w for w, _ in layers]
    trl_all = check_keys(stage, cai.algorithm, trl_all, " < ".join(sources))
    return Recipe(stage=stage, trl=trl_all, cai=cai, sources=sources)


# ---------------------------------------------------------------- data

@dataclass
class DataInfo:
    path: str
    kind: str  # file, datasets folder, run folder
    sha256: str
    rows: int
    constitution_name: str | None = None
    constitution_sha256: str | None = None
    left_out: list[str] = field(default_factory=list)  # what the export from a run folder left out, and why
    judge_calibration: dict | None = None


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def constitution_of(rows: list[dict]) -> tuple[str | None, str | None]:
    """(name, sha256) from the `constitution`/`constitution_sha256` columns `cai export` writes;
    several constitutions are listed comma-separated, rows without the columns give (None, None)."""
    pairs = dict.fromkeys((str(r.get("constitution") or "?"), str(r["constitution_sha256"]))
                          for r in rows if r.get("constitution_sha256"))
    if not pairs:
        return None, None
    return ", ".join(n for n, _ in pairs), ", ".join(h for _, h in pairs)


def read_data(data: str | Path, fmt: Literal["sft", "dpo"], *, fallback: Literal["sft"] | None = None,
              keep_flagged: bool = False, filter: str = "none") -> tuple[list[dict], DataInfo]:
    rows, info = _read_data(data, fmt, fallback=fallback, keep_flagged=keep_flagged, filter=filter)
    if info.constitution_sha256 is None:  # an exported file or datasets folder: its provenance columns say
        info.constitution_name, info.constitution_sha256 = constitution_of(rows)
    if info.judge_calibration is None:
        agreements = {r["judge_agreement"] for r in rows if isinstance(r.get("judge_agreement"), (int, float))}
        if len(agreements) == 1:
            info.judge_calibration = {"agreement": agreements.pop(), "source": "the data's judge_agreement column",
                                      "below_floor": any(r.get("judge_below_floor") for r in rows)}
    return rows, info


def _read_data(data: str | Path, fmt: Literal["sft", "dpo"], *, fallback: Literal["sft"] | None = None,
               keep_flagged: bool = False, filter: str = "none") -> tuple[list[dict], DataInfo]:
    """Rows of a jsonl/json/parquet file, a `datasets` folder, or a run folder (exported as `fmt`,
    else as `fallback` when the run has no preferences yet).

    The hash is the file's sha256 for a file (what `sha256sum` prints) and the export's row hash
    for a run folder, the same figure `cai export` writes in its dataset card.
    """
    p = Path(data).expanduser()
    if p.is_dir() and (p / "generations.jsonl").exists():
        from cai.export import build_rows, rows_sha256
        from cai.records import RunFolder

        run = RunFolder(p)
        from cai.export import LeftOut

        if fallback and fmt == "dpo" and not run.preferences.exists():
            fmt = fallback
        left = LeftOut()
        rows = build_rows(p, fmt, keep_flagged=keep_flagged, filter=filter if fmt == "sft" else "none", left_out=left)
        info = DataInfo(str(p), "run folder", rows_sha256(rows), len(rows), left_out=left.lines())
        meta = run.info()
        if fmt == "dpo" or filter == "judged":
            info.judge_calibration = meta.get("judge_calibration")
        info.constitution_name = meta.get("constitution_name")
        info.constitution_sha256 = meta.get("constitution_sha256")
        return rows, info
    if p.is_dir():
        from datasets import DatasetDict, load_from_disk

        try:
            ds = load_from_disk(str(p))
        except (FileNotFoundError, ValueError) as exc:
            raise UsageError(f"--data {p}: neither a run folder (generations.jsonl) nor a datasets folder: {exc}") from None
        if isinstance(ds, DatasetDict):
            if "train" not in ds:
                raise UsageError(f"--data {p}: a DatasetDict without a train split ({', '.join(ds)})")
            ds = ds["train"]
        rows = ds.to_list()
        from cai.export import rows_sha256

        return rows, DataInfo(str(p), "datasets folder", rows_sha256(rows), len(rows))
    if not p.is_file():
        raise UsageError(f"--data {p}: no such file or folder")
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(p).to_pylist()
    elif p.suffix in (".jsonl", ".json"):
        text = p.read_text(encoding="utf-8")
        try:
            if p.suffix == ".json" or text.lstrip().startswith("["):
                rows = json.loads(text)
            else:
                rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise UsageError(f"--data {p}: not valid JSON ({exc})") from None
    else:
        raise UsageError(f"--data {p}: use .jsonl, .json, .parquet, a datasets folder or a run folder")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise UsageError(f"--data {p}: expected one JSON object per row")
    return rows, DataInfo(str(p), "file", _sha256_file(p), len(rows))


def _messages(value: Any, role: str, where: str) -> list[dict]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        return [{"role": m["role"], "content": m["content"]} for m in value]
    raise UsageError(f"{where}: expected a list of {{role, content}} messages or a string")


def sft_rows(rows: list[dict], where: str) -> list[dict]:
    out = []
    for i, r in enumerate(rows):
        if "messages" not in r:
            raise UsageError(f"{where}: row {i + 1} has no `messages` (SFT rows are {{\"messages\": [...]}})")
        out.append({"messages": _messages(r["messages"], "user", f"{where} row {i + 1}")})
    return out


def preference_rows(rows: list[dict], where: str) -> list[dict]:
    out = []
    for i, r in enumerate(rows):
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in r]
        if missing:
            raise UsageError(f"{where}: row {i + 1} lacks {', '.join(missing)} "
                             "(preference rows are {\"prompt\": [...], \"chosen\": [...], \"rejected\": [...]})")
        at = f"{where} row {i + 1}"
        out.append({"prompt": _messages(r["prompt"], "user", at), "chosen": _messages(r["chosen"], "assistant", at),
                    "rejected": _messages(r["rejected"], "assistant", at)})
    return out


def prompt_rows(rows: list[dict], where: str) -> list[dict]:
    """RL prompts, each with a `reference` answer for the judge: the un-revised (rejected) answer of a
    preference row, else its chosen one, else an SFT row's last assistant turn. Repeated prompts
    (several pairs per prompt) are kept once."""
    out, seen = [], set()
    for i, r in enumerate(rows):
        at = f"{where} row {i + 1}"
        if "prompt" in r:
            prompt = _messages(r["prompt"], "user", at)
            ref = r.get("rejected", r.get("chosen"))
            ref = _messages(ref, "assistant", at)[-1]["content"] if ref is not None else None
        elif "messages" in r:
            msgs = _messages(r["messages"], "user", at)
            last = max((k for k, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
            prompt = msgs[:last] if last is not None else msgs
            ref = msgs[last]["content"] if last is not None else None
        else:
            raise UsageError(f"{at}: no `prompt` or `messages` to take a prompt from")
        if not prompt:
            raise UsageError(f"{at}: empty prompt")
        key = json.dumps(prompt, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append({"prompt": prompt, "reference": ref})
    return out


def holdout_split(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held out): `fraction` of the rows, at least one on each side, drawn with `seed`."""
    if len(rows) < 2:
        raise UsageError(f"need at least 2 pairs to hold one out, got {len(rows)}")
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n = min(len(rows) - 1, max(1, round(len(rows) * fraction)))
    held = set(order[:n])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


# ---------------------------------------------------------------- models

def lora_config(cai: CaiOptions, task_type: str):
    from peft import LoraConfig

    return LoraConfig(r=cai.lora_r, lora_alpha=cai.lora_alpha, lora_dropout=cai.lora_dropout,
                      target_modules=cai.lora_targets, task_type=task_type)


def is_adapter_only(folder: Path) -> bool:
    return (folder / "adapter_config.json").exists() and not (folder / "config.json").exists()


def load_full(folder: Path, auto_cls, **kwargs):
    """A model from a full folder, or from an adapter-only folder merged onto its base (recursively,
    so a chain of `--no-merge` outputs still loads)."""
    folder = Path(folder)
    if not is_adapter_only(folder):
        return auto_cls.from_pretrained(str(folder), **kwargs)
    from peft import PeftModel

    base_path = json.loads((folder / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base_path or not Path(base_path).is_dir():
        raise UsageError(f"{folder}: adapter whose base model {base_path!r} is not a local folder")
    base = load_full(Path(base_path), auto_cls, **kwargs)
    return PeftModel.from_pretrained(base, str(folder)).merge_and_unload()


def load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    folder = Path(folder)
    src = folder
    if not (folder / "tokenizer_config.json").exists() and is_adapter_only(folder):
        src = Path(json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"])
    tok = AutoTokenizer.from_pretrained(str(src))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if not tok.chat_template:
        raise UsageError(f"{folder}: the tokenizer has no chat template; cai trains on chat messages")
    return tok


def model_arg(folder: Path, auto_cls, args, **kwargs):
    """What to hand a TRL trainer as `model`: the path when TRL can load it (so its own dtype and
    device placement apply), else the merged model of an adapter-only folder."""
    if not is_adapter_only(folder):
        return str(folder)
    import torch

    dtype = (args.model_init_kwargs or {}).get("dtype", "float32")
    dtype = getattr(torch, dtype) if isinstance(dtype, str) and dtype != "auto" else dtype
    return load_full(folder, auto_cls, dtype=dtype, **kwargs)


# ---------------------------------------------------------------- output folder

# What a finished run writes at the top of DIR; a fresh run in the same DIR clears these first so
# a --no-merge run never leaves an older merged model beside its adapter.
_OUTPUTS = ("config.json", "generation_config.json", "adapter_config.json", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt", "README.md", METRICS, LOG,
            RECIPE, "training_args.bin")


def prepare_out(out: Path, resume: bool, log) -> str | None:
    """Make DIR ready; return the checkpoint to resume from (None: start fresh)."""
    from transformers.trainer_utils import get_last_checkpoint

    ckpt_dir = out / CHECKPOINTS
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    finished = (out / METRICS).exists()
    if resume:
        if last is None:
            log(f"--resume: no checkpoint in {ckpt_dir}, starting fresh")
        out.mkdir(parents=True, exist_ok=True)
        return last
    if out.exists() and any(out.iterdir()):
        if last is not None and not finished:
            raise UsageError(f"{out} holds checkpoints of an unfinished run: pass --resume to continue it, "
                             "or choose another --out")
        if not finished:
            raise UsageError(f"{out} is not empty and holds no earlier `cai train` run; choose another --out")
        for name in _OUTPUTS:
            (out / name).unlink(missing_ok=True)
        for f in out.glob("*.safetensors*"):
            f.unlink()
        for sub in (CHECKPOINTS, ADAPTER):
            shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    return None


def save_model(trainer, out: Path, model_dir: Path, recipe: Recipe, auto_cls, tokenizer, **load_kwargs) -> str:
    """Write the final model to DIR; returns what DIR holds ("merged", "full" or "adapter").

    `trainer.save_model` gathers the weights under DeepSpeed/FSDP too; the merge then runs on the
    main process from the saved files, so one path serves one CPU and eight GPUs alike.
    """
    import torch

    cai = recipe.cai
    peft_used = cai.lora
    staging = out / ADAPTER if peft_used and cai.merge else out
    trainer.save_model(str(staging))
    if not trainer.accelerator.is_main_process:
        return ""
    dtype = getattr(torch, cai.save_dtype)
    if peft_used:
        # The adapter applies on top of the folder we started from (an adapter-only start is merged
        # in memory, so TRL records the deeper base).
        cfg_path = staging / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = str(model_dir)
        cfg_path.write_text(json.dumps(cfg, indent=2))
        if not cai.merge:
            return "adapter"
        from peft import PeftModel

        base = load_full(model_dir, auto_cls, dtype=torch.float32, **load_kwargs)
        merged = PeftModel.from_pretrained(base, str(staging)).merge_and_unload()
        kind = "merged"
    else:
        merged = auto_cls.from_pretrained(str(out), dtype=torch.float32, **load_kwargs)
        kind = "full"
    merged = merged.to(dtype)
    merged.config.pad_token_id = tokenizer.pad_token_id
    for f in out.glob("*.safetensors*"):  # a full save may have been sharded differently
        f.unlink()
    merged.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    return kind


def _first_last(history: list[dict], key: str) -> tuple[float, float] | None:
    """Mean of the first and of the last quarter of the logged values (one value each for up to 7).

    A logged loss is one small batch's: on a few dozen examples the first and the last step alone
    swing by more than the whole run moves, and read as "training made it worse" half the time.
    """
    vals = [h[key] for h in history if key in h and isinstance(h[key], (int, float))]
    if not vals:
        return None
    k = max(1, len(vals) // 4)
    return sum(vals[:k]) / k, sum(vals[-k:]) / k


def summarize(stage: str, trainer, extra: dict) -> dict:
    history = trainer.state.log_history
    m: dict[str, Any] = {"stage": stage, "steps": trainer.state.global_step}
    final = next((h for h in reversed(history) if "train_runtime" in h), {})
    m["train_runtime_s"] = round(final.get("train_runtime", 0.0), 2)
    for key, name in (("loss", "loss"), ("rewards/margins", "reward_margin"), ("rewards/accuracies", "reward_accuracy"),
                      ("accuracy", "pair_accuracy"), ("reward", "reward"), ("kl", "kl")):
        fl = _first_last(history, key)
        if fl:
            m[f"first_{name}"], m[f"last_{name}"] = fl
    m.update(extra)
    return m


def summary_lines(m: dict) -> list[str]:
    lines = [f"stage: {m['stage']}", f"steps: {m['steps']} ({m.get('train_runtime_s', 0)} s)"]
    for name, label in (("loss", "loss"), ("reward_margin", "reward margin"), ("reward", "reward (mean)")):
        if f"first_{name}" in m:
            lines.append(f"{label}: {m[f'first_{name}']:.4f} → {m[f'last_{name}']:.4f}")
    if "heldout_accuracy" in m:
        lines.append(f"held-out pairwise accuracy: {m['heldout_accuracy']:.3f} on {m['heldout_pairs']} pairs")
    if "resumed_from" in m:
        lines.append(f"resumed from: {m['resumed_from']}")
    if m.get("rows_over_max_length"):
        lines.append(f"rows over max_length: {m['rows_over_max_length']} of {m.get('train_rows', '?')} (truncated by TRL)")
    lines.append(f"output: {m['output']} ({m['saved']})")
    return lines


def write_logs(out: Path, trainer, metrics: dict, recipe: Recipe) -> None:
    with open(out / LOG, "w", encoding="utf-8") as fh:
        for row in trainer.state.log_history:
            fh.write(json.dumps(row) + "\n")
    (out / METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
    (out / RECIPE).write_text(yaml.safe_dump(recipe.as_dict(), sort_keys=False))


def _reward_source(cai: CaiOptions, metrics: dict) -> str:
    if cai.reward == "judge":
        constitution = metrics.get("judge_constitution") or cai.constitution or "default"
        return (f"AI judge `{cai.judge_model}` ({cai.judge_backend}), P(completion beats the "
                f"reference answer), constitution {constitution}, ensemble {cai.judge_ensemble}, both orders")
    return f"reward model `{cai.reward_model}`"


def _num(x) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) else "n/a"


def write_card(out: Path, *, stage: str, model: str, model_dir: Path, data: DataInfo, recipe: Recipe,
               metrics: dict, trainer_name: str) -> Path:
    from cai.records import code_version

    cai = recipe.cai
    if cai.lora:
        method = (f"LoRA r={cai.lora_r}, alpha={cai.lora_alpha}, dropout={cai.lora_dropout}, "
                  f"targets {cai.lora_targets}; " + ("merged into the base (adapter in `adapter/`)"
                                                     if cai.merge else "adapter only (not merged)"))
    else:
        method = "full fine-tune"
    constitution = (f"{data.constitution_name or '?'} (sha256 `{data.constitution_sha256}`)"
                    if data.constitution_sha256 else
                    "not recorded (neither a run folder nor data with `constitution_sha256` columns)")
    rows = f"{metrics.get('train_rows', data.rows)} used for training"
    if "heldout_pairs" in metrics:
        rows += f", {metrics['heldout_pairs']} held out"
    lines = [
        "---",
        f"base_model: {json.dumps(str(model_dir))}",
        "library_name: " + ("peft" if cai.lora and not cai.merge else "transformers"),
        f"tags: [cai, constitutional-ai, trl, {stage}]",
        "---",
        "",
        f"# cai train {stage}",
        "",
        f"Trained by `cai train {stage}` with TRL's {trainer_name}.",
        "",
        "| | |",
        "|---|---|",
        f"| stage | {stage} |",
        f"| base model | `{model}` (`{model_dir}`) |",
        f"| data | `{data.path}` ({data.kind}, {data.rows} rows: {rows}) |",
        f"| data sha256 | `{data.sha256}` |",
        f"| constitution | {constitution} |",
        f"| left out of the data | {('; '.join(data.left_out) or 'nothing') if data.kind == 'run folder' else 'as exported (see the dataset card beside the data)'} |",
        f"| method | {method} |",
        f"| weights saved | {metrics.get('saved', '?')}, {cai.save_dtype} |",
    ]
    if "heldout_accuracy" in metrics:
        lines.append(f"| held-out pairwise accuracy | {metrics['heldout_accuracy']:.3f} on {metrics['heldout_pairs']} pairs "
                     "(share where score(chosen) > score(rejected)) |")
    if stage == "rl":
        lines.append(f"| reward | {_reward_source(cai, metrics)} |")
    cal = data.judge_calibration
    if cal:
        below = " (**below the floor**: the labels are close to chance)" if cal.get("below_floor") else ""
        figures = [f"agreement {_num(cal.get('agreement'))}"] + [
            f"{label} {_num(cal[key])}" for key, label in (("position_consistency", "position consistency"),
                                                           ("longer_wins", "longer wins")) if key in cal]
        n = f", n={cal['n']}" if "n" in cal else ""
        lines.append(f"| judge calibration | {', '.join(figures)}{n} on {cal.get('source', '?')}{below} |")
    lines += [
        f"| code version | {code_version()} |",
        "",
        "## Final metrics",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
              for k, v in metrics.items() if k not in ("output", "saved")]
    lines += ["", "## Recipe", "", f"Merged from: {' < '.join(recipe.sources)}.", "", "```yaml",
              yaml.safe_dump(recipe.as_dict(), sort_keys=False).rstrip(), "```", ""]
    card = out / "README.md"
    card.write_text("\n".join(lines))
    return card


@dataclass
class Job:
    """One stage run, as the stage modules see it."""

    stage: str
    recipe: Recipe
    args: Any  # the TRL config
    model: str  # as the user named it
    model_dir: Path
    tokenizer: Any
    rows: list[dict]
    data: DataInfo
    out: Path
    log: Any = print
    extra: dict = field(default_factory=dict)  # figures a stage adds to metrics.json and the card

    @property
    def cai(self) -> CaiOptions:
        return self.recipe.cai

    def peft_config(self, task_type: str):
        return lora_config(self.cai, task_type) if self.cai.lora else None

    def dtype(self):
        """The dtype of models we load ourselves (reference, reward): the recipe's, else float32."""
        import torch

        want = (self.args.model_init_kwargs or {}).get("dtype", "float32")
        return getattr(torch, want) if isinstance(want, str) and want != "auto" else want


def rows_over(rows: list[dict], tokenizer, limit: int | None) -> int:
    """How many training rows hold more than `limit` tokens once templated (TRL truncates them)."""
    if not limit:
        return 0

    def length(messages) -> int:
        try:
            return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))
        except Exception:  # noqa: BLE001 - a row the template rejects is TRL's to report
            return 0

    def as_messages(value, role):
        return value if isinstance(value, list) else [{"role": role, "content": str(value)}]

    n = 0
    for r in rows:
        if "messages" in r:
            longest = length(r["messages"])
        elif "chosen" in r:
            prompt = as_messages(r.get("prompt", []), "user")
            longest = max(length(prompt + as_messages(r[k], "assistant")) for k in ("chosen", "rejected") if k in r)
        elif "completion" in r:
            longest = length(as_messages(r.get("prompt", []), "user") + as_messages(r["completion"], "assistant"))
        else:
            continue
        n += longest > limit
    return n
