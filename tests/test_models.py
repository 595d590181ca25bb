"""The model cache: built once, shared safely between processes, rebuilt when damaged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cai.cli import main
from cai.models import MANIFEST, check_entry, resolve, wheelhouse


def test_unknown_model_exits_2_and_lists_names():
    res = CliRunner().invoke(main, ["models", "path", "no-such-model"])
    assert res.exit_code == 2
    assert "smollm2-135m" in res.output and "no-such-model" in res.output


def test_local_folder_is_a_model(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert resolve(str(tmp_path)) == tmp_path.resolve()


def test_default_model_folder_is_bf16_safetensors(model_path):
    folder = Path(model_path)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg.get("dtype", cfg.get("torch_dtype")) == "bfloat16"
    assert list(folder.glob("*.safetensors"))
    from safetensors import safe_open

    with safe_open(str(next(folder.glob("*.safetensors"))), "pt") as f:
        key = next(iter(f.keys()))
        assert str(f.get_slice(key).get_dtype()) in ("BF16", "bfloat16")


@pytest.mark.slow
def test_concurrent_pull_then_truncated_rebuild(tmp_path, model_path, monkeypatch):
    """Two processes pull into an empty cache at once: one builds, the other waits and reuses it.
    Then a truncated weights file is detected and rebuilt (by a pull in this process: only the two
    concurrent pulls need processes of their own)."""
    env = {**os.environ, "CAI_HOME": str(tmp_path / "home"), "CAI_WHEELHOUSE": str(wheelhouse())}
    cmd = [sys.executable, "-m", "cai.cli", "models", "pull"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    folders = {o[0].strip() for o in outs}
    assert len(folders) == 1
    folder = Path(folders.pop())
    builds = sum("building" in o[1] for o in outs)
    assert builds == 1, outs  # the second process found the finished entry after the lock
    assert check_entry(folder) is None
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".smollm2-135m-")]  # no temp left

    weights = next(folder.glob("*.safetensors"))
    with open(weights, "r+b") as fh:
        fh.truncate(weights.stat().st_size // 2)
    assert check_entry(folder) is not None
    monkeypatch.setenv("CAI_HOME", env["CAI_HOME"])
    monkeypatch.setenv("CAI_WHEELHOUSE", env["CAI_WHEELHOUSE"])
    res = CliRunner().invoke(main, ["models", "pull"])
    assert res.exit_code == 0, res.output
    assert "building" in res.stderr and res.stdout.strip() == str(folder)
    assert check_entry(folder) is None
    assert json.loads((folder / MANIFEST).read_text())["files"]


def test_pull_of_a_local_folder_prints_it(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    res = CliRunner().invoke(main, ["models", "pull", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert res.output.strip() == str(tmp_path.resolve())


# ---------------------------------------------------------------- adapter-only folders


def tiny_base(folder: Path) -> Path:
    """A randomly initialised two-layer Llama: a real model for peft, built in a fraction of a second."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(folder)
    (folder / "tokenizer_config.json").write_text('{"model_max_length": 64}')
    return folder


def make_adapter(base: Path, out: Path, *, seed: int = 1, base_name: str | None = None) -> Path:
    """A LoRA adapter with non-zero B matrices (a fresh one is zero, so merging would change nothing)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(str(out))
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = base_name or str(base)
    cfg_path.write_text(json.dumps(cfg))
    return out


def reference_merge(base: Path, adapter: Path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload().to(torch.bfloat16).state_dict()


def test_an_adapter_only_folder_is_merged_once_into_the_cache(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    from cai.models import is_adapter_only

    monkeypatch.setenv("CAI_HOME", str(tmp_path / "home"))
    base = tiny_base(tmp_path / "base")
    adapter = make_adapter(base, tmp_path / "adapter")
    assert is_adapter_only(adapter)
    notes: list[str] = []
    merged = resolve(str(adapter), log=notes.append)
    assert merged.parent == tmp_path / "home" / "models" and merged.name.startswith("merged-")
    assert (merged / "config.json").exists() and check_entry(merged) is None
    assert (merged / "tokenizer_config.json").exists()
    assert len(notes) == 1 and "merging the LoRA adapter" in notes[0]
    weights = load_file(str(next(merged.glob("*.safetensors"))))
    expected = reference_merge(base, adapter)
    key = "model.layers.0.self_attn.q_proj.weight"
    assert weights[key].dtype == torch.bfloat16
    assert torch.equal(weights[key], expected[key])
    assert not torch.equal(weights[key], load_file(str(next(base.glob("*.safetensors"))))[key])  # it did change
    # Reused on the next call: no second merge, the same files.
    stamp = (merged / MANIFEST).stat().st_mtime_ns
    assert resolve(str(adapter), log=notes.append) == merged and len(notes) == 1
    assert (merged / MANIFEST).stat().st_mtime_ns == stamp
    assert not [p for p in merged.parent.iterdir() if p.name.startswith(".merged-") and p.is_dir()]
    # A damaged entry is rebuilt; a retrained adapter gets its own entry.
    next(merged.glob("*.safetensors")).write_bytes(b"")
    assert resolve(str(adapter), log=notes.append) == merged and check_entry(merged) is None
    other = make_adapter(base, tmp_path / "adapter2", seed=2)
    assert resolve(str(other), log=notes.append) != merged
    # `cai models path` and `pull` print the merged folder.
    res = CliRunner().invoke(main, ["models", "pull", str(adapter)])
    assert res.exit_code == 0 and res.output.strip().splitlines()[-1] == str(merged)


def test_an_adapter_whose_base_is_unknown_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CAI_HOME", str(tmp_path / "home"))
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "gone")}))
    res = CliRunner().invoke(main, ["models", "path", str(adapter)])
    assert res.exit_code == 2 and "base model of this LoRA adapter" in res.output and "gone" in res.output
    # No base in adapter_config.json: the model card that `cai train` writes names it.
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "README.md").write_text(f'---\nbase_model: "{tmp_path / "gone2"}"\nlibrary_name: peft\n---\n')
    res = CliRunner().invoke(main, ["models", "path", str(adapter)])
    assert res.exit_code == 2 and "gone2" in res.output


@pytest.mark.slow
def test_an_adapter_on_the_default_model_loads_in_a_backend(tmp_path, monkeypatch, model_path):
    """A `--no-merge` style folder (adapter only) on the real default model answers through hf."""
    monkeypatch.setenv("CAI_HOME", str(tmp_path / "home"))
    adapter = make_adapter(Path(model_path), tmp_path / "adapter")
    from cai.backends import load_backend
    from cai.backends.base import SamplingParams

    be = load_backend("hf", str(adapter))
    out = be.chat([[{"role": "user", "content": "Say hello."}]], SamplingParams(max_tokens=4, temperature=0.0))
    assert out[0][0].tokens > 0
    merged = Path(be.model)
    assert merged.name.startswith("merged-") and (merged / "tokenizer.json").exists()
