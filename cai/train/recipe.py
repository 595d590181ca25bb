"""A stage's recipe: TRL config fields plus the `cai:` settings TRL has no field for.

Three layers are merged, later ones winning: the bundled `<stage>-cpu.yaml` or `<stage>-gpu.yaml`,
then `--config FILE`, then flags. A key that is neither a field of the stage's TRL config nor a
`cai:` setting of some stage is an error; another stage's setting is accepted (one recipe may
serve several stages) but left out of what this stage records.

This is the loader; what it builds (`Recipe`) and the settings models (`Settings`) are in
`settings.py`, below the registry and the stage modules.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from cai.errors import UsageError
from cai.train.settings import Recipe, Settings  # noqa: F401 - Settings: importable from here as before

if TYPE_CHECKING:
    from cai.train.stage import Stage

# TRL fields that `cai train` sets from its own flags; a recipe setting them would fight --out/--resume.
RESERVED = {"output_dir": "--out", "resume_from_checkpoint": "--resume"}


def setting_owners() -> dict[str, list[Stage]]:
    """Every `cai:` key any registered stage reads → the stages that read it."""
    from cai.train.registry import STAGES

    owners: dict[str, list] = {}
    for stage in STAGES.values():
        for key in stage.settings.model_fields:
            owners.setdefault(key, []).append(stage)
    return owners


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
    from cai.textfiles import read_recipe_file

    return read_recipe_file(p)


def split_layer(data: dict, where: str, cai_keys: set[str] | frozenset[str]) -> tuple[dict, dict]:
    """One layer → (TRL settings, cai settings). A flat cai key is accepted too (flags use them)."""
    trl_part, cai_part = {}, dict(data.get("cai") or {})
    if not isinstance(cai_part, dict):
        raise UsageError(f"{where}: `cai:` must be a mapping")
    for k, v in data.items():
        if k == "cai":
            continue
        (cai_part if k in cai_keys else trl_part)[k] = v
    return trl_part, cai_part


def resolve_auto(trl: dict) -> dict:
    """`bf16: auto`: bf16 autocast on a GPU and on a CPU with bf16 instructions (AVX512-BF16 or AMX),
    fp32 on other CPUs, where torch emulates bf16 and autocast makes a step slower than fp32."""
    if trl.get("bf16") == "auto":
        from cai.backends import hardware

        trl = {**trl, "bf16": hardware.cpu_has_fast_bf16() if trl.get("use_cpu") else True}
    return trl


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    """YAML 1.1 reads `2e-4` as a string; TrainingArguments does not convert, so we do for floats."""
    kind = str(f.type)
    if isinstance(value, str) and "float" in kind:
        try:
            return float(value)
        except ValueError:
            return value
    return value


def check_keys(cls, trl_part: dict, where: str, cai_keys) -> dict:
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    out = {}
    for k, v in trl_part.items():
        if k in RESERVED:
            raise UsageError(f"{where}: `{k}` is set by {RESERVED[k]}, not by a recipe")
        if k not in fields:
            near = difflib.get_close_matches(k, list(fields) + sorted(cai_keys), n=3)
            hint = f" (did you mean {', '.join(near)}?)" if near else ""
            raise UsageError(f"{where}: unknown key {k!r} for {cls.__name__} or the cai: section{hint}")
        out[k] = _coerce(fields[k], v)
    return out


def _validate(model: type[BaseModel], values: dict, where: str) -> BaseModel:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        msgs = "; ".join(f"cai.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise UsageError(f"recipe ({where}): {msgs}") from None


def load_recipe(stage: str, config: str | Path | None = None, overrides: dict | None = None,
                *, device: str | None = None) -> Recipe:
    """Merge bundled defaults < `config` < `overrides` and check every key."""
    from cai.train.registry import get_stage

    spec = get_stage(stage)
    owners = setting_owners()
    base = bundled_recipe(stage, device)
    layers = [(str(base), read_recipe(base))]
    if config:
        layers.append((str(config), read_recipe(config)))
    if overrides:
        layers.append(("flags", {k: v for k, v in overrides.items() if v is not None}))
    trl_all: dict = {}
    cai_all: dict = {}
    datasets = None
    lr_from_user = False
    for i, (where, data) in enumerate(layers):
        if "datasets" in data:  # the sources to train on (cai/train/mix.py): a later layer's list replaces one
            from cai.train.mix import recipe_sources

            data = dict(data)
            datasets = [s.as_dict() for s in recipe_sources(data.pop("datasets"), where)]
        trl_part, cai_part = split_layer(data, where, owners.keys())
        # A layer that asks for epochs means epochs: an earlier layer's step cap would silently win.
        if "num_train_epochs" in trl_part and "max_steps" not in trl_part:
            trl_part["max_steps"] = -1
        lr_from_user |= i > 0 and "learning_rate" in trl_part
        trl_all.update(trl_part)
        cai_all.update(cai_part)
    sources = [w for w, _ in layers]
    where = " < ".join(sources)
    mine = {k: v for k, v in cai_all.items() if k in spec.settings.model_fields}
    for k, v in cai_all.items():  # another stage's setting: checked by that stage's rules, then set aside
        if k not in mine and k in owners:
            _validate(owners[k][0].settings, {k: v}, where)
    # An unknown cai key is refused by the stage's own model (extra="forbid"), naming it.
    cai = _validate(spec.settings, {**mine, **{k: v for k, v in cai_all.items() if k not in owners}}, where)
    if not cai.lora and cai.full_learning_rate and not lr_from_user:
        trl_all["learning_rate"] = cai.full_learning_rate
    config_cls = spec.config_class(cai)
    trl_all = check_keys(config_cls, resolve_auto(trl_all), where, owners.keys())
    recipe = Recipe(stage=stage, trl=trl_all, cai=cai, config_cls=config_cls, sources=sources, datasets=datasets)
    spec.check(recipe)
    return recipe
