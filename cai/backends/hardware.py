"""Which number format this machine computes fastest in.

Models are stored in bfloat16, but a CPU without native bf16 instructions (no AVX512-BF16, no AMX:
every AVX2-only x86 server and laptop) runs bf16 matrix products through a scalar fallback. Measured
on a 2-core AMD EPYC (Zen 3, AVX2): a 32×576 by 576×1536 product took 6.8 ms in bf16 and 1.0 ms in
float32, and vLLM's decode ran several times faster in float32. So inference picks float32 there and
bf16 where the hardware has it; `CAI_DTYPE` overrides the choice.
"""

from __future__ import annotations

import os

DTYPES = ("bfloat16", "float16", "float32")


def cpu_has_fast_bf16() -> bool:
    import torch

    # Private probes (torch has no public one); a torch without them counts as "no".
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        probe = getattr(torch.cpu, name, None)
        if probe is not None and probe():
            return True
    return False


def compute_dtype(on_gpu: bool | None = None) -> str:
    """The dtype to run inference in: `CAI_DTYPE` if set, else the fastest exact-enough one here."""
    want = os.environ.get("CAI_DTYPE", "auto").strip().lower()
    if want != "auto":
        if want not in DTYPES:
            from cai.errors import UsageError

            raise UsageError(f"CAI_DTYPE={want!r}: choose auto, {', '.join(DTYPES)}")
        return want
    import torch

    if on_gpu is None:
        on_gpu = torch.cuda.is_available()
    if on_gpu:
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if cpu_has_fast_bf16() else "float32"
