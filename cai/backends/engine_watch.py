"""The vLLM engine process must not outlive the cai process that owns it.

vLLM runs its engine in a spawned `EngineCore` process. When the owner dies without shutting it
down (SIGKILL, the OOM killer, a node agent), that process is re-parented and lives on, holding
its memory (on a GPU, the whole KV cache), so the rerun meant to resume fails for lack of it.
vLLM watches its own workers through a pipe but not the engine's parent, so cai starts the engine
through `run_engine_core` below: the same vLLM entry point, plus a watchdog thread that ends the
engine (and anything it started) once its parent is gone. It polls the parent's pid, which works
on every platform vLLM runs on; Linux's parent-death signal is not used because it fires when
the *thread* that started the child exits, and vLLM starts its engine from a helper thread.

This module is imported in the engine process itself (the spawn pickles the target by name), so
it imports nothing heavy at module level.
"""

from __future__ import annotations

import os
import signal
import threading
import time

# How often the engine looks for its parent: a dead owner's engine is gone within about this long.
POLL_S = 1.0


def _parent_alive(ppid: int) -> bool:
    if os.getppid() != ppid:  # re-parented (to init or a subreaper): the owner is gone
        return False
    try:
        os.kill(ppid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_descendants() -> None:
    try:
        import psutil
    except ImportError:
        return
    try:
        for child in psutil.Process().children(recursive=True):
            try:
                child.kill()
            except psutil.Error:
                pass
    except psutil.Error:
        pass


def watch_parent(ppid: int, poll_s: float = POLL_S) -> threading.Thread:
    """A daemon thread that kills this process (and its children) once `ppid` is gone."""

    def run() -> None:
        while _parent_alive(ppid):
            time.sleep(poll_s)
        _kill_descendants()
        # SIGKILL, not an exit: the engine's own shutdown waits on the parent it no longer has.
        os.kill(os.getpid(), signal.SIGKILL)

    t = threading.Thread(target=run, name="cai-parent-watch", daemon=True)
    t.start()
    return t


def run_engine_core(*args, **kwargs):
    """vLLM's `EngineCoreProc.run_engine_core`, watched by the parent-death thread."""
    watch_parent(os.getppid())
    from vllm.v1.engine.core import EngineCoreProc

    original = getattr(EngineCoreProc, "_cai_original_run_engine_core", None) or EngineCoreProc.run_engine_core
    return original(*args, **kwargs)


def install() -> None:
    """Make every engine this process starts from now on run under the watchdog (idempotent)."""
    try:
        from vllm.v1.engine.core import EngineCoreProc
    except ImportError:
        return
    if getattr(EngineCoreProc, "_cai_original_run_engine_core", None) is not None:
        return
    EngineCoreProc._cai_original_run_engine_core = staticmethod(EngineCoreProc.run_engine_core)
    EngineCoreProc.run_engine_core = staticmethod(run_engine_core)
