"""`cai generate`: initial answers, then critique → revision rounds, written to a run folder.

One coroutine per prompt asks for `samples` answers in one request, then runs each sample's rounds;
the Batcher turns the requests of all prompts in flight into batched engine calls. Rows are written
when their prompt is done and flushed after every engine step, so a crash loses at most the chunk
in flight, and a rerun skips every id already on disk.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from cai.backends import load_backend
from cai.backends.base import Backend
from cai.batching import Batcher
from cai.config import GenerateConfig
from cai.constitution import Constitution, load_constitution
from cai.inputs import PromptRow, iter_prompts
from cai.prompts import Templates
from cai.records import GenerationRecord, RunFolder, AppendWriter, code_version, record_id
from cai.revise import Reviser


@dataclass
class GenerateSummary:
    run_dir: Path
    written: int = 0
    skipped: int = 0
    failed: int = 0
    bad_rows: int = 0
    tokens: int = 0
    seconds: float = 0.0
    cleaned: int = 0
    empty_revisions: int = 0
    torn_line_repaired: bool = False
    engine_calls: int = 0
    errors: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        rate = self.written / self.seconds if self.seconds else 0.0
        tps = self.tokens / self.seconds if self.seconds else 0.0
        out = [
            f"run folder     {self.run_dir}",
            f"rows written   {self.written}  ({rate:.2f} rows/s, {tps:.0f} tokens/s)",
            f"skipped        {self.skipped} (already done: resumed)",
            f"failed         {self.failed}",
            f"tokens         {self.tokens}",
            f"time           {self.seconds:.1f} s",
            f"chatter        {self.cleaned} revisions cleaned, {self.empty_revisions} empty kept the previous answer",
        ]
        if self.bad_rows:
            out.append(f"bad rows       {self.bad_rows} skipped")
        if self.torn_line_repaired:
            out.append("repaired       a torn last line left by an interrupted run")
        return out


def default_run_dir(cfg: GenerateConfig, constitution: Constitution) -> Path:
    model = Path(cfg.model).name or cfg.model
    return Path("runs") / f"{constitution.name}-{model}".replace(" ", "_")


def run_identity(cfg: GenerateConfig, constitution: Constitution, templates: Templates) -> dict:
    """What a row id depends on besides its prompt and sample index."""
    return {
        "constitution_sha256": constitution.sha256(),
        "model": cfg.model,
        "seed": cfg.seed,
        "rounds": cfg.rounds,
        "samples": cfg.samples,
        "few_shot": cfg.few_shot,
        "answer": cfg.answer.model_dump(),
        "critique": cfg.critique.model_dump(),
        "revision": cfg.revision.model_dump(),
        "templates": templates.fingerprint(("critique.j2", "revision.j2")),
    }


def run_generate(cfg: GenerateConfig, *, backend: Backend | None = None, progress: bool = True,
                 log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> GenerateSummary:
    constitution = load_constitution(cfg.constitution)
    templates = Templates(cfg.templates)
    run = RunFolder(cfg.run_dir or default_run_dir(cfg, constitution))
    summary = GenerateSummary(run_dir=run.path)
    identity = run_identity(cfg, constitution, templates)
    ident_hash = record_id(identity)
    # Validate every input before the engine starts (one streamed pass, which also counts the rows
    # for the progress bar): a bad row 10,000 lines in should not cost a model load, and with
    # --on-bad-row fail nothing is written.
    bad: list[str] = []
    total = 0
    for _ in iter_prompts(cfg.prompts, prompt_field=cfg.prompt_field, on_bad_row=cfg.on_bad_row,
                          limit=cfg.limit, on_skip=lambda e: bad.append(str(e))):
        total += 1
    for msg in bad[:20]:
        log(f"skipped bad row: {msg}")
    summary.bad_rows = len(bad)

    lock = run.lock()
    try:
        run.start(
            {
                "stage": "generate",
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "code_version": code_version(),
                "constitution_name": constitution.name,
                "constitution_sha256": constitution.sha256(),
                "model": cfg.model,
                "config": cfg.model_dump(mode="json"),
                "identity_hash": ident_hash,
                "constitution": constitution.model_dump(mode="json", exclude={"source"}),
            },
            identity=("constitution_sha256", "model", "identity_hash"),
            force_new=cfg.force_new,
        )
        with AppendWriter(run.generations) as writer:
            summary.torn_line_repaired = writer.repaired
            t0 = time.perf_counter()
            if backend is None:
                log(f"starting {cfg.backend or 'default'} backend with {cfg.model}")
                backend = load_backend(cfg.backend, cfg.model, **cfg.backend_options())
            _run_loop(cfg, backend, constitution, templates, writer, summary, ident_hash, total, progress)
            summary.seconds = time.perf_counter() - t0
    finally:
        lock.release()
    return summary


def _run_loop(cfg, backend, constitution, templates, writer, summary, ident_hash, total, progress) -> None:
    batcher = Batcher(backend)
    answer_params = cfg.answer.params(n=cfg.samples, seed=cfg.seed)
    reviser = Reviser.build(batcher, constitution, templates, cfg.few_shot,
                            cfg.critique.params(seed=cfg.seed), cfg.revision.params(seed=cfg.seed))
    base_meta = {
        "model": cfg.model,
        "backend": getattr(backend, "name", cfg.backend),
        "sampling": {"answer": cfg.answer.model_dump(), "critique": cfg.critique.model_dump(),
                     "revision": cfg.revision.model_dump(), "samples": cfg.samples},
        "seed": cfg.seed,
        "rounds": cfg.rounds,
        "templates": templates.fingerprint(("critique.j2", "revision.j2")),
        "constitution": constitution.name,
        "constitution_sha256": constitution.sha256(),
        "code_version": code_version(),
    }
    bar = _progress(total, progress)

    def ids_for(row: PromptRow) -> list[str]:
        return [record_id("gen", row.messages, s, ident_hash) for s in range(cfg.samples)]

    def jobs():
        for row in iter_prompts(cfg.prompts, prompt_field=cfg.prompt_field, on_bad_row=cfg.on_bad_row, limit=cfg.limit):
            ids = ids_for(row)
            if all(i in writer for i in ids):
                summary.skipped += len(ids)
                bar.update(1)
                continue
            yield lambda row=row, ids=ids: one_prompt(row, ids)

    async def one_prompt(row: PromptRow, ids: list[str]) -> list[GenerationRecord]:
        t = time.perf_counter()
        answers = await batcher.chat(row.messages, answer_params)

        async def one_sample(s: int) -> GenerationRecord:
            ans = answers[s]
            rounds, st = await reviser.rounds(ids[s], row.messages, ans.text.strip(), cfg.rounds)
            summary.cleaned += st.cleaned
            summary.empty_revisions += st.empty
            tokens = {"initial": ans.tokens, "critique": st.critique_tokens, "revision": st.revision_tokens}
            tokens["total"] = sum(tokens.values())
            return GenerationRecord(
                id=ids[s], prompt=row.messages, category=row.category, sample=s,
                initial=ans.text.strip(), rounds=rounds,
                final=rounds[-1].revision if rounds else ans.text.strip(),
                meta={**base_meta, "source_row": row.index, **({"source": row.meta} if row.meta else {}),
                      "finish_reasons": {"initial": ans.finish_reason, "rounds": st.finish},
                      "tokens": tokens, "chatter_cleaned": st.cleaned,
                      "elapsed_s": round(time.perf_counter() - t, 3)},
            )

        return list(await asyncio.gather(*(one_sample(s) for s in range(cfg.samples))))

    def done(records: list[GenerationRecord]) -> None:
        summary.written += writer.write(records)
        summary.tokens += sum(r.meta["tokens"]["total"] for r in records)
        bar.update(1)
        bar.set_postfix_str(_rates(summary, bar), refresh=False)

    try:
        asyncio.run(batcher.run(jobs(), window=cfg.chunk_size, on_done=done, on_step=writer.flush))
    finally:
        writer.flush()
        bar.close()
        summary.engine_calls = batcher.calls


def _rates(summary: GenerateSummary, bar) -> str:
    elapsed = bar.format_dict.get("elapsed") or 0
    if not elapsed:
        return ""
    return f"{summary.written / elapsed:.2f} rows/s, {summary.tokens / elapsed:.0f} tok/s"


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="prompt", disable=not enabled, file=sys.stderr, dynamic_ncols=True)
