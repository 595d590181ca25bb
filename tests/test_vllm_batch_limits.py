"""The async engine gets the offline engine's scheduler limits (sequences and tokens per step), not
the generic ones vLLM gives an `AsyncLLM` started from engine arguments. The engine constructor is
faked: only the arguments it would be started with are checked."""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")


def _offline_defaults(world: int = 1) -> tuple[int, int]:
    from vllm.engine.arg_utils import EngineArgs
    from vllm.usage.usage_lib import UsageContext

    tokens, seqs = EngineArgs.get_batch_defaults(world)
    return seqs[UsageContext.LLM_CLASS], tokens[UsageContext.LLM_CLASS]


def test_the_limits_are_the_offline_engines_for_this_device(model_path):
    from vllm.engine.arg_utils import AsyncEngineArgs

    from cai.backends.vllm_async import offline_batch_limits

    args = offline_batch_limits(AsyncEngineArgs(model=model_path, max_model_len=2048, enable_chunked_prefill=True))
    assert (args.max_num_seqs, args.max_num_batched_tokens) == _offline_defaults()
    assert args.max_num_seqs > 128  # what vLLM would otherwise give this engine, on a CPU and a GPU alike


def test_without_chunked_prefill_a_whole_prompt_fits_one_step(model_path):
    from vllm.engine.arg_utils import AsyncEngineArgs

    from cai.backends.vllm_async import offline_batch_limits

    long = 4 * _offline_defaults()[1]
    args = offline_batch_limits(AsyncEngineArgs(model=model_path, max_model_len=long, enable_chunked_prefill=False))
    assert args.max_num_batched_tokens == long


def test_limits_set_by_hand_stay(model_path):
    from vllm.engine.arg_utils import AsyncEngineArgs

    from cai.backends.vllm_async import offline_batch_limits

    args = offline_batch_limits(AsyncEngineArgs(model=model_path, max_num_seqs=7, max_num_batched_tokens=999))
    assert (args.max_num_seqs, args.max_num_batched_tokens) == (7, 999)


def test_the_async_backend_starts_its_engine_with_them(monkeypatch, model_path):
    import vllm.v1.engine.async_llm as async_llm

    from cai.backends.vllm import engine_args, shutdown_all
    from cai.backends.vllm_async import AsyncVLLMBackend

    made = []

    class FakeAsyncLLM:
        vllm_config = None

        @classmethod
        def from_engine_args(cls, args):
            made.append(args)
            return cls()

        def shutdown(self):
            pass

    monkeypatch.setattr(async_llm, "AsyncLLM", FakeAsyncLLM)
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "all")  # engine_args leaves this test's environment alone
    shutdown_all()
    try:
        AsyncVLLMBackend(model_path)
        (args,) = made
        seqs, tokens = _offline_defaults()
        assert args.max_num_seqs == seqs
        assert args.max_num_batched_tokens == max(tokens, engine_args(model_path)["max_model_len"])
    finally:
        shutdown_all()


@pytest.mark.slow
def test_the_real_async_engine_runs_with_them(vllm_backend):
    from cai.backends.vllm_async import AsyncVLLMBackend

    assert isinstance(vllm_backend, AsyncVLLMBackend)  # the default vllm engine
    sched = vllm_backend._engine.llm.vllm_config.scheduler_config
    seqs, tokens = _offline_defaults()
    assert sched.max_num_seqs == seqs
    assert sched.max_num_batched_tokens == max(tokens, vllm_backend.context_window)
