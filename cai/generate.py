"""`cai generate`: initial answers, then critique → revision rounds, written to a run folder.

One coroutine per prompt asks for `samples` answers in one request, then runs each sample's rounds;
the Batcher turns the requests of all prompts in flight into batched engine calls. Rows are written
when their prompt is done and flushed after every engine step, so a crash loses at most the chunk
in flight, and a rerun skips every id already on disk.

Which prompts are generated is decided first, in one streamed pass over the input and before
any engine starts (cai/dedup.py): duplicates (`--dedup`), prompts overlapping eval sets
(`--decontaminate`, cai/decontaminate.py), then, with `--shard I/N`, the share of shard I. The
decisions depend only on the input and those options, so a resumed run and every shard agree.

A sample whose answer, critique or revision request failed (the openai backend's
`finish_reason="error"` after its retries) is not written: it is counted as failed, and a rerun of
the same command retries it.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from collections import Counter

from cai.backends import check_engine, load_backend, resolve_backend_name
from cai.backends.base import Backend, overflow
from cai.batching import Batcher
from cai.config import GenerateConfig
from cai.constitution import Constitution, load_constitution
from cai.dedup import Selection, Selector
from cai.inputs import PromptRow, iter_prompts, messages_key, parse_shard, prompts_source
from cai.errors import UsageError
from cai.prompts import Templates
from cai.quality import FLAGS, answer_flags, flag_line
from cai.records import GenerationRecord, RunFolder, AppendWriter, code_version, read_rows, record_id
from cai.revise import Reviser, critique_conversation, revision_conversation
from cai.runloop import BatchRun
from cai.window import PROMPT_SAMPLE, RecordSize, Sizing, Window, choose_window, longest_prompt

SHOWN_ERRORS = 5  # failed samples logged one by one; the rest are only counted


@dataclass
class GenerateSummary:
    run_dir: Path
    written: int = 0
    skipped: int = 0
    failed: int = 0
    bad_rows: int = 0
    duplicates: int = 0
    tokens: int = 0
    seconds: float = 0.0
    cleaned: int = 0
    empty_revisions: int = 0
    too_long: int = 0  # prompts that do not fit the model's context with the step's tokens: bad rows
    rounds_stopped: int = 0  # records whose conversation outgrew the context before the last round
    torn_line_repaired: bool = False
    engine_calls: int = 0
    window: Window | None = None  # prompts in flight, and how that was chosen
    selection: Selection | None = None  # which prompts were left out before generating (dedup, eval sets, shard)
    errors: list[str] = field(default_factory=list)
    # Over every row of the run folder (a resumed run included): final answers, and every round.
    flag_counts: dict[str, int] = field(default_factory=dict)
    round_flag_counts: dict[str, int] = field(default_factory=dict)
    rows_total: int = 0

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
            *([f"window         {self.window.size} prompts in flight ({self.window.how})"] if self.window else []),
            *(self.selection.lines() if self.selection else []),
            f"chatter        {self.cleaned} revisions cleaned, {self.empty_revisions} empty kept the previous answer",
            f"flags          {flag_line(self.flag_counts)}  (final answers of all {self.rows_total} rows)",
            f"round flags    {flag_line(self.round_flag_counts)}  (every revision)",
        ]
        excluded = self.flag_counts.get("_excluded", 0)
        if excluded:
            out.append(f"               {excluded} of {self.rows_total} rows have a flagged final answer: "
                       "`cai export` and `cai train` leave them out (--keep-flagged keeps them)")
        if self.failed:
            out.append(f"               {self.failed} failed samples not written; rerun the same command to retry them")
        if self.bad_rows:
            out.append(f"bad rows       {self.bad_rows} skipped")
        if self.too_long:
            out.append(f"too long       {self.too_long} prompts skipped: they do not fit the model's context with "
                       "the answer's max tokens (and the few-shot prefix, with rounds); each is named above")
        if self.rounds_stopped:
            out.append(f"rounds ended   {self.rounds_stopped} rows stopped early: the conversation outgrew the "
                       "context (each row's meta.rounds_stopped says where)")
        if self.duplicates and not (self.selection and self.selection.identical == self.duplicates):
            # identical copies --dedup left out are already in its line ("n of them identical")
            out.append(f"duplicates     {self.duplicates} duplicate prompts (same messages) written once")
        if self.torn_line_repaired:
            out.append("repaired       a torn last line left by an interrupted run")
        return out


def default_run_dir(cfg: GenerateConfig, constitution: Constitution) -> Path:
    model = Path(cfg.model).name or cfg.model
    return Path("runs") / f"{constitution.name}-{model}".replace(" ", "_")


def resolve_reviser(cfg: GenerateConfig, policy_backend: str) -> str | None:
    """The reviser's engine name, or None when the policy revises its own answers. Checked like the
    policy's engine, before anything starts."""
    model = cfg.reviser_name
    if not model:
        return None
    name = resolve_backend_name(cfg.reviser_backend or policy_backend)
    same_server = (cfg.reviser_base_url or None) in (None, cfg.base_url or None)
    if name == policy_backend and model == cfg.model and (name != "openai" or same_server):
        return None  # the same engine and model: one backend does both
    check_engine(name, model, **cfg.reviser_options())
    if name == "vllm" and policy_backend == "vllm":
        raise UsageError(
            f"the policy ({cfg.model}) and the reviser ({model}) would both need a local vLLM engine, "
            "and one process holds one vLLM engine. Serve one of them with vLLM's OpenAI-compatible server "
            "(python -m vllm.entrypoints.openai.api_server --model ...) and point cai at it: "
            "--reviser-backend openai --reviser-base-url http://HOST:PORT (or use --reviser-backend hf)")
    return name


def resolve_run_config(cfg: GenerateConfig, constitution: Constitution,
                       backend: Backend | None) -> tuple[GenerateConfig, Path | None]:
    """The config with every default made explicit (engine, prompt file, run folder), as run.yaml
    records it, and the local model folder (None for a server or a given backend).

    Checks the backend name, the model and the server settings without starting an engine, so a
    typo fails before the run folder is touched."""
    if backend is not None:
        name, folder = getattr(backend, "name", None) or cfg.backend, None
    else:
        name, folder = check_engine(cfg.backend, cfg.model, **cfg.backend_options())
    resolved = {"backend": name, "prompts": str(prompts_source(cfg.prompts)),
                "run_dir": str(cfg.run_dir or default_run_dir(cfg, constitution))}
    if backend is None:
        reviser = resolve_reviser(cfg, name)
        resolved.update(reviser_backend=reviser, reviser_model=cfg.reviser_name if reviser else None,
                        reviser_base_url=cfg.reviser_base_url if reviser else None)
    return cfg.model_copy(update=resolved), folder


def _has_rows(path: Path) -> bool:
    return next(read_rows(path), None) is not None


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
        # Only when there is one, so the ids of runs without a reviser stay what they were.
        **({"reviser": {"model": cfg.reviser_model, "backend": cfg.reviser_backend}} if cfg.reviser_model else {}),
    }


def count_run_flags(path: Path) -> tuple[int, dict[str, int], dict[str, int]]:
    """(rows, final-answer flag counts, round flag counts) over a generations file; zeros included.
    `_excluded` counts the rows whose final answer training leaves out by default."""
    from cai.quality import excluding

    rows, final, rounds = 0, Counter({f: 0 for f in FLAGS}), Counter({f: 0 for f in FLAGS})
    for row in read_rows(path):
        rows += 1
        final.update(row.get("flags") or [])
        final["_excluded"] += bool(excluding(row.get("flags") or []))
        for r in row.get("rounds") or []:
            rounds.update(f for f in r.get("flags") or [] if f in FLAGS)
    return rows, dict(final), dict(rounds)


def run_generate(cfg: GenerateConfig, *, backend: Backend | None = None, reviser: Backend | None = None,
                 progress: bool = True,
                 log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> GenerateSummary:
    constitution = load_constitution(cfg.constitution, warn=log)
    templates = Templates(cfg.templates)
    # Validate every input before the engine starts (one streamed pass, which also counts the rows
    # for the progress bar): a bad row 10,000 lines in should not cost a model load, and with
    # --on-bad-row fail nothing is written.
    # The same pass decides which prompts are generated (dedup, decontamination, the shard), so
    # that happens before any engine starts too.
    decontaminator = None
    if cfg.decontaminate:
        from cai.decontaminate import Decontaminator

        decontaminator = Decontaminator.from_files(cfg.decontaminate, prompt_field=cfg.prompt_field)
    selector = Selector(cfg.dedup, decontaminator=decontaminator, shard=parse_shard(cfg.shard))
    bad: list[str] = []
    total = 0
    for row in iter_prompts(cfg.prompts, prompt_field=cfg.prompt_field, on_bad_row=cfg.on_bad_row,
                            limit=cfg.limit, on_skip=lambda e: bad.append(str(e))):
        total += 1
        selector.add(row)
    for msg in bad[:20]:
        log(f"skipped bad row: {msg}")
    if total == 0:  # nothing to do is not a success, and no run folder is made for it
        source = prompts_source(cfg.prompts)
        raise UsageError(f"{source}: no usable prompt" + (f" ({len(bad)} bad rows skipped, the first: {bad[0]})"
                                                          if bad else " (the file has no rows)"))
    selection = selector.finish(reread=lambda: iter_prompts(cfg.prompts, prompt_field=cfg.prompt_field,
                                                            on_bad_row=cfg.on_bad_row, limit=cfg.limit))
    _log_selection(selection, log)
    cfg, model_folder = resolve_run_config(cfg, constitution, backend)
    run = RunFolder(cfg.run_dir)
    summary = GenerateSummary(run_dir=run.path, selection=selection)
    summary.duplicates = selection.identical
    identity = run_identity(cfg, constitution, templates)
    ident_hash = record_id(identity)
    summary.bad_rows = len(bad)

    lock = run.lock()
    try:
        # Another setup is refused only when there are rows to protect: a run that failed before
        # writing any (a bad flag, an engine that did not start) leaves nothing worth keeping.
        force_new = cfg.force_new or not _has_rows(run.generations)
        run.start(
            {
                "stage": "generate",
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "code_version": code_version(),
                "constitution_name": constitution.name,
                "constitution_sha256": constitution.sha256(),
                "model": cfg.model,
                **({"model_path": str(model_folder)} if model_folder else {}),
                "config": cfg.model_dump(mode="json"),
                "identity_hash": ident_hash,
                # Which prompts this run generates; the same in every shard of one sharded run.
                "prompts_digest": selection.digest,
                "dedup": selection.dedup_record(),
                **({"decontaminated": selection.decontam_record()} if selection.decontaminator is not None else {}),
                **({"shard": selection.shard_record()} if selection.shard else {}),
                "constitution": constitution.model_dump(mode="json", exclude={"source"}),
            },
            # A folder holds one shard's rows: resuming it as another shard would mix two.
            identity=("constitution_sha256", "model", "identity_hash", "shard"),
            force_new=force_new,
        )
        with AppendWriter(run.generations) as writer:
            summary.torn_line_repaired = writer.repaired
            t0 = time.perf_counter()
            if selection.kept == 0:  # all left out (or another shard's): no engine to start
                log("generate: no prompt left to generate (see the dedup, decontaminated and shard lines)")
            elif backend is None:
                log(f"starting {cfg.backend} backend with {cfg.model}")
                backend = load_backend(cfg.backend, cfg.model, **cfg.backend_options())
            if selection.kept and reviser is None and cfg.reviser_backend:
                log(f"starting {cfg.reviser_backend} backend with the reviser {cfg.reviser_model}")
                reviser = load_backend(cfg.reviser_backend, cfg.reviser_model, **cfg.reviser_options())
            try:
                if selection.kept:
                    _run_loop(cfg, backend, reviser or backend, constitution, templates, writer, summary, ident_hash,
                              selection, progress, log)
            finally:
                summary.seconds = time.perf_counter() - t0
                summary.rows_total, summary.flag_counts, summary.round_flag_counts = count_run_flags(run.generations)
                counts = {k: v for k, v in summary.flag_counts.items() if not k.startswith("_")}
                # The window is recorded beside the config (which keeps what was asked, e.g. auto),
                # never in the identity: a resumed run may choose another one.
                window = {"window": summary.window.record()} if summary.window else {}
                try:
                    run.update_info(flag_counts=counts, round_flag_counts=summary.round_flag_counts, **window)
                except OSError:  # a full disk: the error on its way up says so; the rerun records them
                    pass
    finally:
        lock.release()
    return summary


def record_sizes(cfg: GenerateConfig, policy: Backend, reviser_backend: Backend, reviser: Reviser) -> list[Sizing]:
    """What one prompt's record holds on each engine, for `--chunk-size auto`.

    On the policy's engine: the prompt and its answer, for each of `samples`. On the reviser's (the
    policy's own unless a reviser model is given), each sample's largest request, the revision
    request: the few-shot prefix, the prompt, the answer, the critique request, the critique and the
    revision request, plus the revision it generates. Each round starts again from the prefix with
    that round's answer (from round 2 on, the previous revision), so rounds do not add up: the
    largest round is the one with the longest answer slot. The prompt is the longest of the first
    PROMPT_SAMPLE streamed (see cai/window.py); the principle the one with the longest requests."""
    def sample():
        return (row.messages for row in iter_prompts(cfg.prompts, prompt_field=cfg.prompt_field, on_bad_row="skip",
                                                     limit=min(cfg.limit or PROMPT_SAMPLE, PROMPT_SAMPLE)))

    def answer() -> RecordSize:
        return RecordSize(longest_prompt(policy.count_tokens, sample())[0] + cfg.answer.max_tokens, cfg.samples)

    def rounds() -> RecordSize:
        _, prompt = longest_prompt(reviser_backend.count_tokens, sample())
        request = max(reviser_backend.count_tokens(revision_conversation(
            critique_conversation(reviser.prefix, prompt, "", p, reviser.templates), "", p, reviser.templates))
            for p in reviser.constitution.principles)
        answer_slot = max(cfg.answer.max_tokens, cfg.revision.max_tokens if cfg.rounds > 1 else 0)
        tokens = request + answer_slot + cfg.critique.max_tokens + cfg.revision.max_tokens
        return RecordSize(tokens, cfg.samples)

    if not cfg.rounds:
        return [Sizing(policy, answer)]
    if reviser_backend is policy:
        return [Sizing(policy, lambda: max(answer(), rounds(), key=lambda r: r.total))]
    return [Sizing(policy, answer, "policy"), Sizing(reviser_backend, rounds, "reviser")]


@dataclass
class _Failed:
    id: str
    row: int
    reason: str


def _log_selection(selection: Selection, log: Callable[[str], None]) -> None:
    """The first few prompts left out, each with the reason."""
    for e in selection.skipped[:SHOWN_ERRORS]:
        log(f"dedup: source row {e['source_row']} is a{'n' if e['kind'] == 'exact' else ''} {e['kind']} duplicate "
            f"of row {e['duplicate_of']}; left out")
    for e in selection.contaminated[:SHOWN_ERRORS]:
        log(f"decontaminate: source row {e['source_row']} overlaps {', '.join(map(str, e['matches'][:3]))}; left out")


def _run_loop(cfg, backend, reviser_backend, constitution, templates, writer, summary, ident_hash,
              selection: Selection, progress, log) -> None:
    total = selection.kept
    batcher = Batcher(backend)
    rbatcher = batcher if reviser_backend is backend else Batcher(reviser_backend)
    answer_params = cfg.answer.params(n=cfg.samples, seed=cfg.seed)
    reviser = Reviser.build(rbatcher, constitution, templates, cfg.few_shot,
                            cfg.critique.params(seed=cfg.seed), cfg.revision.params(seed=cfg.seed))
    separate = rbatcher is not batcher
    summary.window = choose_window(cfg.chunk_size, record_sizes(cfg, backend, reviser_backend, reviser), unit="prompt")
    log(f"window: {summary.window.size} prompts in flight ({summary.window.how})")
    base_meta = {
        "model": cfg.model,
        "backend": getattr(backend, "name", cfg.backend),
        **({"reviser_model": cfg.reviser_model or getattr(reviser_backend, "model", "?"),
            "reviser_backend": getattr(reviser_backend, "name", cfg.reviser_backend)} if separate else {}),
        "sampling": {"answer": cfg.answer.model_dump(), "critique": cfg.critique.model_dump(),
                     "revision": cfg.revision.model_dump(), "samples": cfg.samples,
                     # Same distribution, other draws: worth knowing when comparing two runs' rows.
                     **({"speculative_tokens": cfg.speculative_tokens}
                        if cfg.speculative_tokens and getattr(backend, "name", None) == "vllm" else {})},
        "seed": cfg.seed,
        "rounds": cfg.rounds,
        "templates": templates.fingerprint(("critique.j2", "revision.j2")),
        "constitution": constitution.name,
        "constitution_sha256": constitution.sha256(),
        "code_version": code_version(),
    }
    loop = BatchRun(batcher, total=total, unit="prompt", progress=progress, flush=writer.flush, also=[rbatcher],
                    status=lambda seconds: _rates(summary, seconds))

    def ids_for(row: PromptRow) -> list[str]:
        return [record_id("gen", row.messages, s, ident_hash) for s in range(cfg.samples)]

    def too_long(row: PromptRow) -> str | None:
        # The answer request is the prompt alone; a critique later adds the few-shot prefix.
        conv = (reviser.prefix if cfg.rounds else []) + list(row.messages)
        over = overflow(reviser_backend if cfg.rounds else backend, conv, cfg.answer.max_tokens)
        if over is None and cfg.rounds and reviser_backend is not backend:
            over = overflow(backend, row.messages, cfg.answer.max_tokens)
        if over is None:
            return None
        return (f"{prompts_source(cfg.prompts)}: row {row.index + 1}: prompt: {over[0]} tokens"
                f"{' with the few-shot prefix' if cfg.rounds else ''}, plus {cfg.answer.max_tokens} for the answer, "
                f"do not fit the model's context of {over[1]} tokens")

    def jobs():
        seen: set[bytes] = set()
        rows = iter_prompts(cfg.prompts, prompt_field=cfg.prompt_field, on_bad_row=cfg.on_bad_row, limit=cfg.limit)
        for position, row in enumerate(rows):
            if not selection.keep(position):  # a duplicate, an eval prompt, another shard's: not counted
                continue
            # Same messages, same ids: the copy would only be dropped at write time, unreported
            # (with --dedup none; exact dedup has left such copies out already).
            key = messages_key(row.messages)
            if key in seen:
                summary.duplicates += 1
                loop.skip()
                continue
            seen.add(key)
            ids = ids_for(row)
            if all(i in writer for i in ids):
                summary.skipped += len(ids)
                loop.skip()
                continue
            reason = too_long(row)
            if reason:
                if cfg.on_bad_row == "fail":
                    raise UsageError(reason + " (--on-bad-row skip leaves it out)")
                summary.too_long += 1
                if summary.too_long <= SHOWN_ERRORS:
                    log(f"skipped too-long row: {reason}")
                loop.skip()
                continue
            yield lambda row=row, ids=ids: one_prompt(row, ids)

    async def one_prompt(row: PromptRow, ids: list[str]) -> list[GenerationRecord | _Failed]:
        t = time.perf_counter()
        answers = await batcher.chat(row.messages, answer_params)

        async def one_sample(s: int) -> GenerationRecord | _Failed:
            ans = answers[s]
            if ans.finish_reason == "error":  # no answer to criticise: the rounds would be noise
                return _Failed(ids[s], row.index, f"answer: {ans.error or 'request failed'}")
            rounds, st = await reviser.rounds(ids[s], row.messages, ans.text.strip(), cfg.rounds)
            if st.error:
                return _Failed(ids[s], row.index, st.error)
            summary.cleaned += st.cleaned
            summary.empty_revisions += st.empty
            summary.rounds_stopped += st.stopped is not None
            tokens = {"initial": ans.tokens, "critique": st.critique_tokens, "revision": st.revision_tokens}
            tokens["total"] = sum(tokens.values())
            initial_flags = answer_flags(ans.text, ans.finish_reason)
            # The row's flags describe its final text: a round whose revision came back empty kept
            # the previous answer, and that answer's own flags.
            final_flags = initial_flags
            for rd in rounds:
                if "empty" not in rd.flags:
                    final_flags = [f for f in rd.flags if not f.startswith("critique_")]
            return GenerationRecord(
                id=ids[s], prompt=row.messages, category=row.category, sample=s,
                initial=ans.text.strip(), rounds=rounds,
                final=rounds[-1].revision if rounds else ans.text.strip(),
                flags=final_flags, initial_flags=initial_flags,
                meta={**base_meta, "source_row": row.index, **({"source": row.meta} if row.meta else {}),
                      "finish_reasons": {"initial": ans.finish_reason, "rounds": st.finish},
                      "tokens": tokens, "chatter_cleaned": st.cleaned,
                      **({"rounds_stopped": st.stopped} if st.stopped else {}),
                      "elapsed_s": round(time.perf_counter() - t, 3)},
            )

        return list(await asyncio.gather(*(one_sample(s) for s in range(cfg.samples))))

    def done(results: list[GenerationRecord | _Failed]) -> None:
        records = [r for r in results if isinstance(r, GenerationRecord)]
        new = [r for r in records if r.id not in writer]
        summary.skipped += len(records) - len(new)  # samples of a half-done prompt written by an earlier run
        summary.written += writer.write(new)
        summary.tokens += sum(r.meta["tokens"]["total"] for r in new)
        for f in results:
            if isinstance(f, _Failed):
                summary.failed += 1
                message = f"failed sample {f.id} (source_row {f.row}): {f.reason}; not written, a rerun retries it"
                summary.errors.append(message)
                if summary.failed <= SHOWN_ERRORS:
                    log(message)
                elif summary.failed == SHOWN_ERRORS + 1:
                    log("more failed samples: only counted from here on")

    try:
        loop.run(jobs(), done, window=summary.window.size)
    finally:
        summary.engine_calls = loop.calls


def _rates(summary: GenerateSummary, seconds: float) -> str:
    return f"{summary.written / seconds:.2f} rows/s, {summary.tokens / seconds:.0f} tok/s"
