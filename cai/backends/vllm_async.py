"""vLLM's asynchronous engine in-process: conversations pipelined across steps, no HTTP.

The offline `LLM` takes one batch per call, so a step (all answers, then all critiques) ends with a
tail where the engine runs a few long requests while the rest wait for the barrier. Here each
record sends its next request the moment its last one returns (a `PipelinedBackend`: the Batcher
sends each request through `achat_one` / `achoice_logprobs_one`), and vLLM's scheduler keeps the
batch full across step boundaries.

`AsyncLLM` must live on one event loop for its whole life, while cai calls `asyncio.run` once per
stage; so the engine gets its own loop on a background thread and requests cross over with
`run_coroutine_threadsafe`.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Sequence

from cai.backends.base import (Completion, Conversation, PromptTokens, SamplingParams, conversation_seed,
                               merge_option_logprobs, prefixes_for, tokenize_once, too_long_completions, unasked)
from cai.backends.vllm_engine import (TOP_LOGPROBS, activate, decoded_logprobs, engine_args, kv_tokens, render_ids,
                                      to_completions, to_vllm_params)


def offline_batch_limits(args):
    """`args` (AsyncEngineArgs) with the offline engine's scheduler limits where none are set.

    vLLM sizes a step's sequences and tokens by who starts the engine: the offline `LLM` gets this
    device's batch defaults (256 sequences and 4096 tokens on a CPU, up to 1024 and 16384 on a large
    GPU), while `AsyncLLM.from_engine_args` falls back to the scheduler's generic 128 and 2048. So
    the pipelined engine ran at most 128 sequences however many records the window put in flight
    (`auto` puts hundreds to thousands on a GPU), where the barrier engine ran up to the device's
    limit. cai feeds this engine batch work, as it feeds the offline one: same limits.
    """
    from vllm.usage.usage_lib import UsageContext

    tokens, seqs = args.get_batch_defaults(args.pipeline_parallel_size * args.tensor_parallel_size)
    context = UsageContext.LLM_CLASS
    if args.max_num_seqs is None and context in seqs:
        args.max_num_seqs = seqs[context]
    if args.max_num_batched_tokens is None and context in tokens:
        budget = tokens[context]
        if args.enable_chunked_prefill is False:
            budget = max(budget, args.max_model_len)  # a whole prompt in one step, as vLLM's own default
        args.max_num_batched_tokens = budget
    return args


class _AsyncEngine:
    """AsyncLLM on its own event loop thread."""

    def __init__(self, args):
        self.ids = itertools.count()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="cai-vllm-async", daemon=True)
        self.thread.start()
        self.llm = self.call(self._make(args))

    @staticmethod
    async def _make(args):
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(offline_batch_limits(args))

    def call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        # Cancel the engine's own tasks first and let them finish: once the engine process is
        # gone they would otherwise log an EngineDeadError traceback on every normal exit.
        async def drain():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.call(drain())
            self.llm.shutdown()
            self.call(drain())
        finally:
            self.llm = None  # its __del__ runs now, while the interpreter is still whole
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)


class AsyncVLLMBackend:
    """The `vllm` backend's default engine (see `VLLMBackend.open`), with the same Options.

    Requests go to the engine as token ids, each request tokenized once: the ids `count_tokens`
    computed for a context check are the ones sent (PromptTokens). A request that does not fit the
    context is not sent: `finish_reason="too_long"` completions, or -inf for every option."""

    name = "vllm"

    def __init__(self, model: str, **engine_opts):
        """`engine_opts`: the keyword arguments of `engine_args`."""
        from transformers import AutoTokenizer

        self.model = model
        self.tok = AutoTokenizer.from_pretrained(model)
        self._args = dict(engine_args(model, **engine_opts), disable_log_stats=True)
        self.context_window = self._args["max_model_len"]
        self.prompts = PromptTokens(self._render, keep=tokenize_once())
        self._engine  # start now, not on the first request
        self.prompts.sized_for(self.kv_capacity())

    @property
    def _engine(self) -> _AsyncEngine:
        # Looked up on each use: another backend may have replaced the process's engine meanwhile.
        from vllm.engine.arg_utils import AsyncEngineArgs

        key = ("async", tuple(sorted(self._args.items())))
        return activate(key, lambda: _AsyncEngine(AsyncEngineArgs(**self._args)), _AsyncEngine.stop)

    def kv_capacity(self) -> int | None:
        return kv_tokens(getattr(self._engine.llm, "vllm_config", None))

    def max_in_flight(self) -> int | None:
        return None  # bounded by the KV cache

    def count_tokens(self, conv: Conversation, prefix: str | None = None) -> int:
        return self.prompts.count(conv, prefix)

    def _render(self, conv: Conversation, prefix: str | None = None) -> list[int]:
        return render_ids(self.tok, conv, prefix)

    async def _generate(self, ids: list[int], sp):
        from vllm.sampling_params import RequestOutputKind

        sp.output_kind = RequestOutputKind.FINAL_ONLY
        final = None
        eng = self._engine
        async for out in eng.llm.generate({"prompt_token_ids": ids}, sp, f"cai-{next(eng.ids)}"):
            final = out
        return final

    def _submit(self, ids: list[int], sp):
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._generate(ids, sp), self._engine.loop))

    def _chat_params(self, conv: Conversation, params: SamplingParams):
        if params.seed is not None:
            params = params.model_copy(update={"seed": conversation_seed(params.seed, conv)})
        return to_vllm_params(params)

    def _logprob_params(self):
        from vllm import SamplingParams as VSP

        return VSP(max_tokens=1, temperature=0.0, logprobs=TOP_LOGPROBS)

    def _too_long(self, n: int, prompt_tokens: int, params: SamplingParams) -> list[Completion]:
        return too_long_completions(n, prompt_tokens, params.max_tokens, self.context_window)

    async def achat_one(self, conversation: Conversation, params: SamplingParams) -> list[Completion]:
        ids = self.prompts.take(conversation)
        if len(ids) + params.max_tokens > self.context_window:
            return self._too_long(params.n, len(ids), params)
        out = await self._submit(ids, self._chat_params(conversation, params))
        return to_completions(out)

    async def achoice_logprobs_one(self, conversation: Conversation, prefix: str, options: Sequence[str]) -> dict[str, float]:
        ids = self.prompts.take(conversation, prefix)
        if len(ids) + 1 > self.context_window:
            return unasked(options)
        out = await self._submit(ids, self._logprob_params())
        return merge_option_logprobs(decoded_logprobs(out.outputs[0].logprobs[0]), options)

    async def _gather(self, coros):
        return await asyncio.gather(*coros)

    def chat(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[list[Completion]]:
        send, over = self.prompts.split(conversations, [None] * len(conversations), params.max_tokens,
                                        self.context_window)
        results: list = [None] * len(conversations)
        for i, n in over.items():
            results[i] = self._too_long(params.n, n, params)
        futs = [self._generate(ids, self._chat_params(conversations[i], params)) for i, ids in send]
        for (i, _), o in zip(send, self._engine.call(self._gather(futs))):
            results[i] = to_completions(o)
        return results

    def choice_logprobs(self, conversations: Sequence[Conversation], assistant_prefix: str | Sequence[str],
                        options: Sequence[str]) -> list[dict[str, float]]:
        prefixes = prefixes_for(assistant_prefix, len(conversations))
        send, over = self.prompts.split(conversations, prefixes, 1, self.context_window)
        results: list = [unasked(options) if i in over else None for i in range(len(conversations))]
        futs = [self._generate(ids, self._logprob_params()) for _, ids in send]
        for (i, _), o in zip(send, self._engine.call(self._gather(futs))):
            results[i] = merge_option_logprobs(decoded_logprobs(o.outputs[0].logprobs[0]), options)
        return results

    def close(self) -> None:
        pass
