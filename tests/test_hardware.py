"""The engine settings cai picks for the machine: number format and CPU threads."""

from __future__ import annotations

import pytest

from cai.backends import hardware
from cai.errors import UsageError


def test_float32_on_a_cpu_without_native_bf16(monkeypatch):
    monkeypatch.delenv("CAI_DTYPE", raising=False)
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: False)
    assert hardware.compute_dtype(on_gpu=False) == "float32"
    monkeypatch.setattr(hardware, "cpu_has_fast_bf16", lambda: True)
    assert hardware.compute_dtype(on_gpu=False) == "bfloat16"


def test_cai_dtype_overrides_and_is_checked(monkeypatch):
    monkeypatch.setenv("CAI_DTYPE", "BFloat16")
    assert hardware.compute_dtype(on_gpu=False) == "bfloat16"
    monkeypatch.setenv("CAI_DTYPE", "fp8")
    with pytest.raises(UsageError, match="CAI_DTYPE"):
        hardware.compute_dtype(on_gpu=False)


def test_this_machine_gets_a_known_dtype(monkeypatch):
    monkeypatch.delenv("CAI_DTYPE", raising=False)
    assert hardware.compute_dtype() in hardware.DTYPES


@pytest.mark.parametrize("cpus, bound", [({0, 1}, "0,1"), (set(range(8)), "0,1,2,3,4,5,6,7"), (set(range(16)), None), ({3}, None)])
def test_small_machines_compute_on_every_core(monkeypatch, cpus, bound):
    from cai.backends import vllm

    for name in ("VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_NUM_OF_RESERVED_CPU"):
        monkeypatch.setenv(name, "")  # recorded, so whatever the call sets is undone afterwards
        monkeypatch.delenv(name)
    monkeypatch.setattr(vllm.os, "sched_getaffinity", lambda pid: cpus)
    vllm.use_all_cpus()
    assert vllm.os.environ.get("VLLM_CPU_OMP_THREADS_BIND") == bound
    assert vllm.os.environ.get("VLLM_CPU_NUM_OF_RESERVED_CPU") == ("0" if bound else None)


def test_a_users_thread_binding_wins(monkeypatch):
    from cai.backends import vllm

    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "1")
    monkeypatch.setenv("VLLM_CPU_NUM_OF_RESERVED_CPU", "")
    monkeypatch.delenv("VLLM_CPU_NUM_OF_RESERVED_CPU")
    monkeypatch.setattr(vllm.os, "sched_getaffinity", lambda pid: {0, 1})
    vllm.use_all_cpus()
    assert vllm.os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    assert "VLLM_CPU_NUM_OF_RESERVED_CPU" not in vllm.os.environ
