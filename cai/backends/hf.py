"""transformers backend: the fallback where vLLM does not run, and the reference for correctness.

Batched generation with left padding; conversations are sorted by length inside a call so that a
micro-batch wastes little on padding, and results are put back in input order. Each request is
tokenized once: the ids `count_tokens` computed for a context check are the ones run (PromptTokens),
and a request that does not fit the context is not run (`finish_reason="too_long"`, or -inf for
every option).
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

from cai.backends.base import (BackendOptions, Completion, Conversation, Engine, PromptTokens, SamplingParams, option,
                               option_token_variants, prefixes_for, tokenize_once, too_long_completions, unasked)
from cai.backends.hardware import DTYPES, compute_dtype


class HFOptions(BackendOptions):
    dtype: Literal["auto", *DTYPES] = option("auto", description="auto: the fastest exact-enough one here.")
    batch_size: int = option(16, ge=1, description="Conversations per forward pass.")
    device: str | None = option(None, description="Default: cuda where available, else cpu.")


class HFBackend(Engine):
    name = "hf"
    Options = HFOptions

    def __init__(self, model: str, *, dtype: str = "auto", batch_size: int = 16, device: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = model
        self.batch_size = batch_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tok = AutoTokenizer.from_pretrained(model)
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        if dtype == "auto":
            dtype = compute_dtype(self.device.startswith("cuda"))
        self.dtype = dtype
        self.lm = AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype)).to(self.device).eval()
        # Tokens a conversation plus its reply may hold (positions beyond it are not trained).
        self.context_window = getattr(self.lm.config, "max_position_embeddings", None)
        self.prompts = PromptTokens(self._ids, keep=tokenize_once())  # the ids count_tokens computed, run as they are

    def kv_capacity(self) -> int | None:
        return None  # transformers allocates per forward pass: the batch size is the bound

    def max_in_flight(self) -> int | None:
        return self.batch_size

    def count_tokens(self, conv: Conversation, prefix: str | None = None) -> int:
        return self.prompts.count(conv, prefix)

    def _render(self, conv: Conversation, *, prefix: str | None = None) -> str:
        if prefix is None:
            return self.tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
        conv = list(conv) + [{"role": "assistant", "content": prefix}]
        return self.tok.apply_chat_template(conv, tokenize=False, continue_final_message=True)

    def _ids(self, conv: Conversation, prefix: str | None = None) -> list[int]:
        # The chat template already holds the BOS and role markers.
        return self.tok(self._render(conv, prefix=prefix), add_special_tokens=False)["input_ids"]

    def _batches(self, ids: list[list[int]]):
        """Index batches of similar length (less padding), in order of decreasing length."""
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        for s in range(0, len(order), self.batch_size):
            yield order[s : s + self.batch_size]

    def _encode(self, ids: list[list[int]]):
        return self.tok.pad({"input_ids": ids}, padding=True, return_tensors="pt").to(self.device)

    def _split(self, conversations, prefixes, new_tokens: int):
        """The indices to run, {index: ids} of those, and {index: prompt tokens} of those that do not fit."""
        send, over = self.prompts.split(conversations, prefixes, new_tokens, self.context_window)
        return [i for i, _ in send], {i: ids for i, ids in send}, over

    def chat(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[list[Completion]]:
        import torch

        index, ids, over = self._split(conversations, [None] * len(conversations), params.max_tokens)
        results: list[list[Completion]] = [[] for _ in conversations]
        for i, n in over.items():
            results[i] = too_long_completions(params.n, n, params.max_tokens, self.context_window)
        eos = {self.tok.eos_token_id, self.tok.pad_token_id} - {None}
        if params.seed is not None:
            torch.manual_seed(params.seed)
        rows = [ids[i] for i in index]
        for batch in self._batches(rows):
            enc = self._encode([rows[b] for b in batch])
            sample = params.temperature > 0
            kwargs = dict(
                max_new_tokens=params.max_tokens,
                do_sample=sample,
                num_return_sequences=params.n,
                pad_token_id=self.tok.pad_token_id,
            )
            if sample:
                kwargs.update(temperature=params.temperature, top_p=params.top_p)
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            if params.stop:
                kwargs.update(stop_strings=list(params.stop), tokenizer=self.tok)
            with torch.inference_mode():
                out = self.lm.generate(**enc, **kwargs)
            gen = out[:, enc["input_ids"].shape[1] :].tolist()
            for j, b in enumerate(batch):
                for k in range(params.n):
                    results[index[b]].append(self._completion(gen[j * params.n + k], eos, params))
        return results

    def _completion(self, ids: list[int], eos: set[int], params: SamplingParams) -> Completion:
        n_tok, stopped = len(ids), False
        for pos, t in enumerate(ids):
            if t in eos:
                n_tok, stopped = pos + 1, True
                break
        text = self.tok.decode(ids[: n_tok - 1 if stopped else n_tok], skip_special_tokens=True)
        for s in params.stop:  # like vLLM: the stop string itself is not part of the answer
            cut = text.find(s)
            if cut >= 0:
                text, stopped = text[:cut], True
        reason = "stop" if stopped or n_tok < params.max_tokens else "length"
        return Completion(text=text, tokens=n_tok, finish_reason=reason)

    def option_ids(self, option: str) -> list[int]:
        ids = set()
        for variant in option_token_variants(option):
            toks = self.tok.encode(variant, add_special_tokens=False)
            if len(toks) == 1:
                ids.add(toks[0])
        return sorted(ids)

    def choice_logprobs(self, conversations: Sequence[Conversation], assistant_prefix: str | Sequence[str],
                        options: Sequence[str]) -> list[dict[str, float]]:
        import torch

        prefixes = prefixes_for(assistant_prefix, len(conversations))
        index, ids, over = self._split(conversations, prefixes, 1)
        option_ids = {o: self.option_ids(o) for o in options}
        results: list[dict[str, float]] = [unasked(options) if i in over else {} for i in range(len(conversations))]
        rows = [ids[i] for i in index]
        for batch in self._batches(rows):
            enc = self._encode([rows[b] for b in batch])
            with torch.inference_mode():
                logits = self.lm(**enc).logits[:, -1, :].float()
            logp = torch.log_softmax(logits, dim=-1)
            for j, b in enumerate(batch):
                results[index[b]] = {
                    o: (torch.logsumexp(logp[j, option_ids[o]], 0).item() if option_ids[o] else -math.inf)
                    for o in options
                }
        return results

    def close(self) -> None:
        pass
