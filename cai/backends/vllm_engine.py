"""The vLLM engine pieces both vLLM backends share: the process's one engine, the engine arguments
for this machine, and the conversions between cai's and vLLM's requests and outputs.

The offline backend (`vllm.py`) and the async one (`vllm_async.py`) both import this module, and
it imports neither. vLLM's API moves between releases: its calls live here and in those two files.
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path

from cai.backends.base import Completion, Conversation, SamplingParams
from cai.backends.hardware import compute_dtype

# The one engine of this process (offline or async kind): a second would double the memory and
# fight for the cores, so starting another kind or model stops the current one first.
_ACTIVE: dict = {"key": None, "engine": None, "stop": None}

# vLLM returns at most this many alternatives per position; option letters after "(" are always
# among them for the models we have tried. An option it does not return counts as -inf.
TOP_LOGPROBS = 20

# Up to this many cores, keeping one core out of vLLM's compute costs more than it gives.
SMALL_MACHINE_CPUS = 8


def cpu_kv_fraction(target_gib: float = 4.0) -> float:
    """Share of NUMA node 0's memory to reserve for the KV cache on a CPU.

    vLLM's default (0.92) fails at start-up when other processes hold memory, so take a modest
    reservation out of what node 0 actually has free, leaving room for the rest of the process.
    """
    total = free = None
    try:
        for line in Path("/sys/devices/system/node/node0/meminfo").read_text().splitlines():
            parts = line.split()
            if "MemTotal:" in parts:
                total = int(parts[-2]) / 2**20
            elif "MemFree:" in parts:
                free = int(parts[-2]) / 2**20
    except OSError:
        pass
    if not total or not free:
        return 0.3
    want = min(target_gib, 0.5 * free)
    return round(max(0.05, min(0.9, want / total)), 3)


def activate(key: tuple, start, stop):
    """The process's engine for `key`, starting it (and stopping any other) when needed."""
    if _ACTIVE["key"] != key:
        shutdown_all()
        from cai.backends.engine_watch import install

        install()  # the engine process ends itself if this one dies without stopping it
        _ACTIVE.update(key=key, engine=start(), stop=stop)
        # Stop the engine before the interpreter tears down what its threads still use;
        # otherwise every exit prints an EngineDeadError traceback.
        if not _ACTIVE.get("atexit"):
            atexit.register(shutdown_all)
            _ACTIVE["atexit"] = True
    return _ACTIVE["engine"]


def engine_args(model: str, *, max_model_len: int = 2048, gpu_memory_fraction: float | None = None,
                prefix_caching: bool = True, tensor_parallel_size: int | None = None,
                data_parallel_size: int | None = None, quantization: str | None = None, dtype: str = "auto",
                seed: int = 0, speculative_tokens: int = 0) -> dict:
    """vLLM engine arguments for this machine, shared by the offline and the async engine.

    `speculative_tokens` > 0 turns on n-gram speculative decoding: drafts are looked up in the
    request's own prompt and output, so it costs no second model; a critique quotes the answer and
    a revision copies most of it, which is where drafts get accepted. The target model verifies
    every draft, so the samples' distribution is unchanged (not which seed draws which sample).
    """
    import torch

    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        use_all_cpus()
    if gpu_memory_fraction is None:
        env = os.environ.get("CAI_VLLM_MEMORY")
        gpu_memory_fraction = float(env) if env else (0.85 if on_gpu else cpu_kv_fraction())
    return dict(
        model=model,
        dtype=compute_dtype(on_gpu) if dtype == "auto" else dtype,
        max_model_len=max_model_len,
        enforce_eager=not on_gpu,  # CUDA graphs need a GPU; on the CPU eager is what works
        gpu_memory_utilization=gpu_memory_fraction,
        enable_prefix_caching=prefix_caching,
        tensor_parallel_size=tensor_parallel_size or 1,
        seed=seed,
        use_tqdm_on_load=False,  # a progress bar per weight file, printed by every engine start
        # Only when asked for, so the engine arguments of a plain run stay what they were.
        **({"data_parallel_size": data_parallel_size} if data_parallel_size else {}),
        **({"quantization": quantization} if quantization else {}),
        **({"speculative_config": ngram_speculation(speculative_tokens)} if speculative_tokens else {}),
        **engine_defaults(on_gpu),
    )


def kv_tokens(vllm_config) -> int | None:
    """Tokens the started engine's KV cache holds: blocks × block size. The front-end learns the
    blocks from the engine core's handshake (summed over data-parallel copies); None before that, or
    where a vLLM release keeps its config elsewhere (the fixed window then applies)."""
    cache = getattr(vllm_config, "cache_config", None)
    blocks, size = getattr(cache, "num_gpu_blocks", None), getattr(cache, "block_size", None)
    return blocks * size if blocks and size else None


def ngram_speculation(tokens: int) -> dict:
    # Matches of 2 to 4 tokens: one token matches too often to be a good guess.
    return {"method": "ngram", "num_speculative_tokens": tokens, "prompt_lookup_min": 2, "prompt_lookup_max": 4}


def engine_defaults(on_gpu: bool) -> dict:
    """Engine arguments cai sets on top of vLLM's defaults, each for a measured reason.

    - CPU, chunked prefill off: vLLM 0.32's CPU worker crashes ("CPU Generator does not use
      offset") when a seeded request's prompt is prefilled in chunks, which happens once long
      critique prompts share a step; so a prompt is always prefilled whole. Drop this when the CPU
      worker handles it.
    - CPU, 32-token KV blocks (vLLM's CPU default is 128): prefix caching reuses whole blocks only,
      and a revision request repeats its critique request's prompt and output. With 128-token
      blocks up to 127 tokens of each shared prefix are prefilled again; on a CPU prefill is most
      of the loop's cost (the prompts are 3x the output tokens).
    """
    if on_gpu:
        return {}
    return {"enable_chunked_prefill": False, "block_size": 32}


def use_all_cpus() -> None:
    """On a small CPU machine, let vLLM's worker compute on every core.

    vLLM binds its worker's threads to all cores but one, which it keeps for the scheduler. On 2
    cores that halves the compute for a scheduler that mostly waits: measured here, decode ran 1.5x
    and prefill 1.8x faster with the worker on both cores. Big machines keep vLLM's binding, and a
    user's own VLLM_CPU_OMP_THREADS_BIND always wins.
    """
    if "VLLM_CPU_OMP_THREADS_BIND" in os.environ:
        return
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return
    if 1 < len(cpus) <= SMALL_MACHINE_CPUS:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, cpus))
        os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")


def shutdown_all() -> None:
    """Stop the engine of this process, whichever kind it is."""
    eng, stop = _ACTIVE.get("engine"), _ACTIVE.get("stop")
    _ACTIVE.update(key=None, engine=None, stop=None)
    if eng is not None:
        stop(eng)


def render_ids(tok, conv: Conversation, prefix: str | None = None) -> list[int]:
    """A request's prompt ids as vLLM's chat path makes them (`LLM.chat`: the chat template, then
    the text tokenized without added special tokens, since the template holds them): a new
    assistant turn when `prefix` is None, else the assistant's reply `prefix` continued. Both
    backends send these ids as token prompts, so vLLM does not render the request again."""
    if prefix is None:
        return tok.apply_chat_template(conv, tokenize=True, add_generation_prompt=True, return_dict=False)
    conv = list(conv) + [{"role": "assistant", "content": prefix}]
    return tok.apply_chat_template(conv, tokenize=True, continue_final_message=True, return_dict=False)


def to_vllm_params(params: SamplingParams, **extra):
    from vllm import SamplingParams as VSP

    return VSP(
        n=params.n,
        max_tokens=params.max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        seed=params.seed,
        stop=list(params.stop) or None,
        **extra,
    )


def to_completions(output) -> list[Completion]:
    return [
        Completion(
            text=o.text,
            tokens=len(o.token_ids),
            finish_reason="length" if o.finish_reason == "length" else "stop",
        )
        for o in output.outputs
    ]


def decoded_logprobs(position: dict) -> dict[str, float]:
    """{decoded token text: logprob} for one position of vLLM's logprobs."""
    out: dict[str, float] = {}
    for lp in position.values():
        text = lp.decoded_token or ""
        out[text] = max(out.get(text, float("-inf")), lp.logprob)
    return out
