"""Training that fits: the process-wide memory settings (cai/train/memory.py), `bf16: auto` and
the reference log-probabilities computed once only where that is cheaper."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cai.errors import UsageError
from cai.backends import hardware
from cai.train import memory
from cai.train.dpo import reference_once_if_cheaper
from cai.train.recipe import load_recipe


@pytest.fixture
def restore_chunk():
    import trl.trainer.utils as trl_utils

    before = trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE
    yield trl_utils
    trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = before


def test_logprob_chunk_reaches_trls_tiles(restore_chunk):
    assert memory.set_logprob_chunk(2048)
    assert restore_chunk._CHUNKED_LOGPROB_CHUNK_SIZE == 2048


def test_a_trl_without_the_tile_constant_is_reported_not_patched(restore_chunk, monkeypatch):
    monkeypatch.delattr(restore_chunk, "_CHUNKED_LOGPROB_CHUNK_SIZE")
    lines = []
    memory.apply(load_recipe("dpo", overrides={"logprob_chunk": 4096}, device="cpu").cai, log=lines.append)
    assert not hasattr(restore_chunk, "_CHUNKED_LOGPROB_CHUNK_SIZE")
    assert lines and "logprob_chunk" in lines[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_mmap_threshold_is_accepted_by_glibc():
    # In a child: glibc keeps a set threshold for the life of the process (its own sliding one is
    # off from then on), which would change every later test's allocations.
    code = "from cai.train import memory; raise SystemExit(0 if memory.set_mmap_threshold(1 << 20) else 1)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_unset_keys_leave_the_libraries_alone(restore_chunk, monkeypatch):
    calls = []
    monkeypatch.setattr(memory, "set_mmap_threshold", lambda n: calls.append(n) or True)
    before = restore_chunk._CHUNKED_LOGPROB_CHUNK_SIZE
    memory.apply(load_recipe("reward", device="cpu").cai, log=calls.append)
    assert calls == [] and restore_chunk._CHUNKED_LOGPROB_CHUNK_SIZE == before


@pytest.mark.parametrize("stage", ["sft", "dpo", "kto"])
@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_bundled_recipes_leave_both_to_the_libraries(stage, device):
    # Measured on the CPU recipes with bf16 and gradient checkpointing (benchmarks/train.py): neither
    # setting lowered the peak, and each cost a few percent a step; they stay keys a user may set.
    cai = load_recipe(stage, device=device).cai
    assert cai.malloc_mmap_threshold is None and cai.logprob_chunk is None


def test_a_recipe_can_set_both(restore_chunk):
    cai = load_recipe("dpo", overrides={"malloc_mmap_threshold": 262144, "logprob_chunk": 4096}, device="cpu").cai
    assert (cai.malloc_mmap_threshold, cai.logprob_chunk) == (262144, 4096)


@pytest.mark.parametrize("key,value", [("malloc_mmap_threshold", 1 << 30), ("logprob_chunk", 16)])
def test_out_of_range_values_exit_2(key, value):
    with pytest.raises(UsageError, match=key):
        load_recipe("dpo", overrides={key: value}, device="cpu")


@pytest.mark.parametrize("native,expected", [(True, True), (False, False)])
def test_bf16_auto_follows_the_cpus_bf16_instructions(monkeypatch, native, expected):
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: native)
    r = load_recipe("dpo", overrides={"bf16": "auto"}, device="cpu")
    assert r.trl["bf16"] is expected  # recipe.yaml records what ran, not "auto"
    assert load_recipe("dpo", overrides={"bf16": "auto", "use_cpu": False}, device="gpu").trl["bf16"] is True


class _Args:
    def __init__(self, max_steps, batch=4, accum=1, precompute=True):
        self.max_steps, self.per_device_train_batch_size, self.gradient_accumulation_steps = max_steps, batch, accum
        self.world_size, self.precompute_ref_log_probs = 1, precompute


class _Job:
    def __init__(self, args, rows):
        self.args, self.rows, self.extra, self.lines = args, [{}] * rows, {}, []

    def log(self, line):
        self.lines.append(line)


@pytest.mark.parametrize("max_steps,rows,kept", [
    (8, 32, True),     # the steps cover every row once: the same reference work, out of the steps
    (-1, 500, True),   # epochs: every row is trained
    (50, 500, False),  # 200 of 500 rows trained: scoring all 500 up front would cost more
])
def test_reference_log_probs_are_precomputed_only_where_cheaper(max_steps, rows, kept):
    job = _Job(_Args(max_steps), rows)
    reference_once_if_cheaper(job)
    assert job.args.precompute_ref_log_probs is kept
    assert job.extra["reference_log_probs"] == ("precomputed once" if kept else "every step")
    assert bool(job.lines) is not kept


def test_a_recipe_without_precompute_is_left_alone():
    job = _Job(_Args(8, precompute=False), 32)
    reference_once_if_cheaper(job)
    assert job.args.precompute_ref_log_probs is False and not job.lines
