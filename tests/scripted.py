"""A scripted backend for fast tests of the loop's logic (never the only test of a feature).

Answers are derived from the conversation, so a test can tell which request produced which text;
`choice_logprobs` prefers the option whose response contains `prefer` (both orders consistent).
"""

from __future__ import annotations

import math
import zlib

from cai.backends.base import Completion, SamplingParams


class ScriptedBackend:
    name = "scripted"
    model = "scripted-model"

    def __init__(self, prefer: str = "GOOD", fail_after_calls: int | None = None):
        self.prefer = prefer
        self.calls: list[tuple[str, int]] = []
        self.fail_after_calls = fail_after_calls

    def _tick(self, kind: str, n: int) -> None:
        if self.fail_after_calls is not None and len(self.calls) >= self.fail_after_calls:
            raise RuntimeError("scripted crash")
        self.calls.append((kind, n))

    def chat(self, conversations, params: SamplingParams):
        self._tick("chat", len(conversations))
        out = []
        for conv in conversations:
            last = conv[-1]["content"]
            turn = sum(1 for m in conv if m["role"] == "assistant")
            comps = []
            for k in range(params.n):
                if "Reply with the rewritten response only" in last:
                    # tagged by the row's prompt (its last user turn comes before the answer, the critique
                    # request, the critique and this request), so revisions of different prompts differ
                    # (as a policy's do) while every round of one row gives the same text
                    asked = conv[-5]["content"] if len(conv) >= 5 else ""
                    tag = zlib.crc32(asked.encode()) % 100_000
                    text = f"Sure, here is a revised response:\nGOOD revision {turn} sample {k} ({tag})"
                elif "critique" in last.lower():
                    text = f"critique of turn {turn}"
                else:
                    text = f"answer {k} to: {last[:40]}"
                comps.append(Completion(text=text, tokens=len(text.split()), finish_reason="stop"))
            out.append(comps)
        return out

    def choice_logprobs(self, conversations, assistant_prefix, options):
        self._tick("logprobs", len(conversations))
        res = []
        for conv in conversations:
            text = conv[-1]["content"]
            a = text.split("(A)")[1].split("(B)")[0]
            b = text.split("(B)")[1].split("Answer with")[0]
            pa = 0.9 if self.prefer in a and self.prefer not in b else 0.1 if self.prefer in b and self.prefer not in a else 0.5
            res.append({options[0]: math.log(pa), options[1]: math.log(1 - pa)})
        return res

    def close(self):
        pass
