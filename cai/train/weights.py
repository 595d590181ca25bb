"""Weights: LoRA settings, loading models from full or adapter-only folders, and saving the result.

The output folder always holds a model that transformers, vLLM and the next `cai train` stage load
as they are: with LoRA the adapter is merged into the base and saved in bf16 (the adapter itself
goes to `adapter/`); `--no-merge` writes the adapter alone, for PEFT users.
"""

from __future__ import annotations

import json
from pathlib import Path

from cai.errors import UsageError
from cai.models import is_adapter_only
from cai.train.settings import Recipe, Settings

ADAPTER = "adapter"


def lora_config(cai: Settings, task_type: str):
    from peft import LoraConfig

    return LoraConfig(r=cai.lora_r, lora_alpha=cai.lora_alpha, lora_dropout=cai.lora_dropout,
                      target_modules=cai.lora_targets, task_type=task_type)



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

