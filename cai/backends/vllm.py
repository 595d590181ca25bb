"""vLLM offline engine (GPU or CPU build): the fast path.

The `vllm` backend: `VLLMBackend.open` picks the async engine (`vllm_async.py`, the default) or this
offline one. What both engines share (the process's one engine, the engine arguments for this
machine, request and output conversions) is in `vllm_engine.py`; vLLM's API moves between releases,
so its calls live in these three files. The engine is started once per process (it spawns a worker
process and takes ~20 s on a CPU) and kept in a module cache.

Both engines get requests as token ids, each request tokenized once: the ids `count_tokens`
computed for a stage's context check (`overflow()`) are the ones sent, and a request nobody checked
is rendered where it is sent (base.PromptTokens). A request that does not fit the context is found
there and not sent: `finish_reason="too_long"` completions (or -inf for every option of a judge's
question) while the rest of its batch runs, where vLLM would have failed the whole batch.
"""

from __future__ import annotations

import os
from typing import Sequence

from cai.backends.base import (BackendOptions, Completion, Conversation, Engine, PromptTokens, SamplingParams,
                               conversation_seed, merge_option_logprobs, option, prefixes_for, tokenize_once,
                               too_long_completions, unasked)
from cai.backends.vllm_engine import (TOP_LOGPROBS, activate, decoded_logprobs, engine_args, kv_tokens,
                                      render_ids, to_completions, to_vllm_params)
# Importable from here as before the shared pieces moved to vllm_engine.py.
from cai.backends.vllm_engine import (SMALL_MACHINE_CPUS, cpu_kv_fraction, engine_defaults,  # noqa: F401
                                      ngram_speculation, shutdown_all, use_all_cpus)
from cai.errors import UsageError


def engine(model: str, **opts):
    """The offline engine for (model, options): started on first use, then reused."""
    return activate(("offline", model, tuple(sorted(opts.items()))), lambda: _start(model, **opts), shutdown)


class VLLMOptions(BackendOptions):
    """The vLLM engine settings cai passes on (each None: vLLM's or cai's default for this machine)."""

    max_model_len: int = option(2048, ge=256, description="Context length in tokens (prompt plus reply).")
    # A config hands speculation to whichever engine it starts; elsewhere it is only a speed-up.
    speculative_tokens: int = option(0, ge=0, le=16, elsewhere="note",
                                     description="n-gram speculative decoding: draft tokens per step (0: off).")
    tensor_parallel_size: int | None = option(None, ge=1, description="GPUs one copy of the model is split over.")
    data_parallel_size: int | None = option(None, ge=1, description="Copies of the model, each on its own GPUs "
                                            "(tensor_parallel_size each); vLLM spreads the requests over them.")
    gpu_memory_fraction: float | None = option(None, gt=0, le=1, description="Share of each GPU's memory vLLM may "
                                               "take (weights, activations, KV cache); on a CPU, of node memory "
                                               "for the KV cache. Default: CAI_VLLM_MEMORY, else 0.85 on a GPU.")
    quantization: str | None = option(None, description="vLLM's quantization method (awq, gptq, fp8, ...); "
                                      "default: what the checkpoint's config says.")
    prefix_caching: bool = option(True, description="Reuse the KV cache of shared prompt prefixes.")
    dtype: str = option("auto", description="auto: the fastest exact-enough one on this machine.")
    seed: int = option(0)
    pipeline: bool | None = option(None, description="The async engine, requests pipelined across steps "
                                   "(default: yes unless CAI_VLLM_PIPELINE=0); else the offline engine.")

    def pipelined(self) -> bool:
        if self.pipeline is not None:
            return self.pipeline
        return os.environ.get("CAI_VLLM_PIPELINE", "1") != "0"

    def engine_kwargs(self) -> dict:
        """The keywords of `engine_args` (`pipeline` picks the engine class instead)."""
        return self.model_dump(exclude={"pipeline"})


def quantization_methods() -> tuple[str, ...]:
    """The quantization names the installed vLLM accepts (importing it takes seconds)."""
    import typing

    from vllm.model_executor.layers.quantization import QuantizationMethods

    return typing.get_args(QuantizationMethods)


def _start(model: str, **opts):
    from vllm import LLM

    return LLM(**engine_args(model, **opts))


def shutdown(llm) -> None:
    try:
        llm.llm_engine.engine_core.shutdown()
    except Exception:  # noqa: BLE001 - best effort; the worker dies with the process anyway
        pass


class VLLMBackend(Engine):
    name = "vllm"
    Options = VLLMOptions

    @classmethod
    def check(cls, options: VLLMOptions) -> None:
        from cai.backends import vllm_available

        if not vllm_available():
            raise UsageError("vLLM is not installed here: install cai[cpu] or cai[gpu], or use --backend hf")
        if (options.data_parallel_size or 1) > 1 and not options.pipelined():
            # vLLM's offline LLM refuses data parallelism in one process; its async engine balances
            # requests over the copies itself.
            raise UsageError("--data-parallel-size needs the pipelined engine: unset CAI_VLLM_PIPELINE=0")
        if options.quantization and options.quantization not in (known := quantization_methods()):
            raise UsageError(f"--quantization {options.quantization!r}: the installed vLLM knows "
                             f"{', '.join(known)}")

    @classmethod
    def open(cls, model: str, options: VLLMOptions):
        if options.pipelined():
            # The async engine in-process: each conversation's next request goes in as soon as its
            # last one returns, so the engine never idles at a step boundary.
            from cai.backends.vllm_async import AsyncVLLMBackend

            return AsyncVLLMBackend(model, **options.engine_kwargs())
        return cls(model, **options.engine_kwargs())

    def __init__(self, model: str, **engine_opts):
        """`engine_opts`: the keyword arguments of `engine_args` (one list of engine settings)."""
        self.model = model
        self._opts = engine_opts
        self.context_window = engine_args(model, **engine_opts)["max_model_len"]
        self._tok = None
        # The ids `count_tokens` computed, sent as they are (see PromptTokens).
        self.prompts = PromptTokens(self._render, keep=tokenize_once())
        self.llm  # start the engine now, not on the first request
        self.prompts.sized_for(self.kv_capacity())

    @property
    def tok(self):
        if self._tok is None:
            from transformers import AutoTokenizer

            self._tok = AutoTokenizer.from_pretrained(self.model)
        return self._tok

    def _render(self, conv: Conversation, prefix: str | None = None) -> list[int]:
        """The request's prompt ids, as vLLM's chat path renders it: the chat template (a new
        assistant turn, or the prefix's turn continued), tokenized without added special tokens."""
        return render_ids(self.tok, conv, prefix)

    def count_tokens(self, conv: Conversation, prefix: str | None = None) -> int:
        return self.prompts.count(conv, prefix)

    def kv_capacity(self) -> int | None:
        return kv_tokens(getattr(getattr(self.llm, "llm_engine", None), "vllm_config", None))

    def max_in_flight(self) -> int | None:
        return None  # bounded by the KV cache

    @property
    def llm(self):
        # Looked up on each use: another backend in this process may have replaced the engine
        # (one at a time), and this one then transparently starts it again.
        return engine(self.model, **self._opts)

    def _chat_params(self, conversations: Sequence[Conversation], params: SamplingParams) -> list:
        if params.seed is None:
            return [to_vllm_params(params)] * len(conversations)
        # A seed per request, from the run seed and the conversation itself, so a sample does not
        # depend on which other requests happened to share its batch.
        return [to_vllm_params(params.model_copy(update={"seed": conversation_seed(params.seed, c)}))
                for c in conversations]

    def chat(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[list[Completion]]:
        """A conversation that does not fit the context with `params.max_tokens` more is not sent:
        its completions come back with `finish_reason="too_long"`, and the rest of the batch runs."""
        if not conversations:
            return []
        sps = self._chat_params(conversations, params)
        if not self.prompts.keep:  # vLLM renders and tokenizes each conversation again (as before)
            outs = self.llm.chat(list(map(list, conversations)), sps, use_tqdm=False)
            return [to_completions(o) for o in outs]
        send, over = self.prompts.split(conversations, [None] * len(conversations), params.max_tokens,
                                        self.context_window)
        results: list = [None] * len(conversations)
        for i, n in over.items():
            results[i] = too_long_completions(params.n, n, params.max_tokens, self.context_window)
        if send:
            outs = self.llm.generate([{"prompt_token_ids": ids} for _, ids in send], [sps[i] for i, _ in send],
                                     use_tqdm=False)
            for (i, _), o in zip(send, outs):
                results[i] = to_completions(o)
        return results

    def choice_logprobs(self, conversations: Sequence[Conversation], assistant_prefix: str | Sequence[str],
                        options: Sequence[str]) -> list[dict[str, float]]:
        """A request that does not fit the context (with the option's token) is not sent: -inf for
        every option."""
        if not conversations:
            return []
        from vllm import SamplingParams as VSP

        prefixes = prefixes_for(assistant_prefix, len(conversations))
        sp = VSP(max_tokens=1, temperature=0.0, logprobs=TOP_LOGPROBS)
        if not self.prompts.keep:  # as before: vLLM renders each conversation itself
            convs = [list(c) + [{"role": "assistant", "content": p}] for c, p in zip(conversations, prefixes)]
            outs = self.llm.chat(convs, sp, use_tqdm=False, add_generation_prompt=False,
                                 continue_final_message=True)
            return [merge_option_logprobs(decoded_logprobs(o.outputs[0].logprobs[0]), options) for o in outs]
        send, over = self.prompts.split(conversations, prefixes, 1, self.context_window)
        results: list = [unasked(options) if i in over else None for i in range(len(conversations))]
        if send:
            outs = self.llm.generate([{"prompt_token_ids": ids} for _, ids in send], sp, use_tqdm=False)
            for (i, _), o in zip(send, outs):
                results[i] = merge_option_logprobs(decoded_logprobs(o.outputs[0].logprobs[0]), options)
        return results

    def close(self) -> None:
        # The engine stays cached for the process: starting it again costs ~20 s on a CPU.
        pass
