"""Process-wide memory settings a training stage applies before its model loads (`cai:` keys).

Measured on the default model (benchmarks/train.py --phases, DPO, 4 pairs of ~320 tokens), a step's
resident memory went to three places besides the model: the activations kept for the backward
(gradient_checkpointing, a TRL field, handles those), the vocabulary projection, and memory the C
allocator had been handed back but kept. The last two have no TRL or transformers field:

- `malloc_mmap_threshold` (bytes): glibc serves every allocation at least this large from a
  mapping of its own and unmaps it when the tensor is freed. Left alone, glibc raises its
  threshold to 32 MiB after the first large free, so a step's activation-sized tensors (a few MiB
  each) are cut from the heap, and freed out of order they stay resident: the peak of a DPO step
  included ~2.4 GB of such memory. Linux with glibc only; elsewhere the key is ignored.
- `logprob_chunk` (vocabulary columns): TRL scores the next tokens without full logits, one tile of
  tokens x vocabulary columns at a time (TRL's own width: 32,768 columns). Without Triton (on a
  CPU) the tile's arithmetic runs as whole-tile torch operations, several full-size temporaries at
  once, and the backward of that projection was the peak of every step; a narrower tile holds the
  same work in a fraction of the memory.

Both stay set for the rest of the process (a later stage in the same process keeps them). The
bundled recipes leave both unset: those figures are from fp32 steps without gradient checkpointing;
with bf16 and checkpointing (the DPO and KTO CPU recipes now) neither lowered the peak and each
cost a few percent a step.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h


def set_mmap_threshold(nbytes: int) -> bool:
    """Tell glibc to map allocations of `nbytes` and more on their own; False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    # mallopt's parameter numbers are glibc's; musl has no mallopt at all
    if not (hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")):
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, int(nbytes)))


def set_logprob_chunk(columns: int) -> bool:
    """Set the vocabulary width of TRL's chunked log-probability tiles; False if this TRL has none."""
    try:
        import trl.trainer.utils as trl_utils
    except ImportError:
        return False
    # A module constant TRL reads on every call, not a config field: check it is still there.
    if not isinstance(getattr(trl_utils, "_CHUNKED_LOGPROB_CHUNK_SIZE", None), int):
        return False
    trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = int(columns)
    return True


def apply(settings, log=print) -> None:
    """Apply a recipe's memory settings (`None` leaves the library's own behaviour)."""
    threshold = getattr(settings, "malloc_mmap_threshold", None)
    if threshold is not None and not set_mmap_threshold(threshold):
        log("malloc_mmap_threshold: no glibc here; the C allocator keeps its own threshold")
    columns = getattr(settings, "logprob_chunk", None)
    if columns is not None and not set_logprob_chunk(columns):
        log("logprob_chunk: the installed TRL has no chunked log-probability head; the setting has no effect")
