"""How preference pairs are formed and labelled, over a run folder or an outside file.

`revision`: the final revision against the initial answer of each generation row, checked by the
judge: when the judge prefers the initial answer the pair is flipped, and that is counted.
`samples`: the answers sampled for one prompt are compared pairwise; chosen is the best and
rejected the worst by mean win probability, written only when the judge's direct verdict on those two
agrees. Ties (the tie rule of cai/judge/verdict.py, or a direct verdict against the ranking) are
kept out of preferences.jsonl but written to ties.jsonl with the reason: counted and listed, never
dropped silently.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from pydantic import Field, field_validator

from cai.batching import Batcher
from cai.judge.calibration import calibrate, calibration_lines, floor_paragraph, settings_key, with_floor
from cai.judge.figures import MIN_AGREEMENT, BiasTally, PositionTally
from cai.inputs import in_shard
from cai.judge.pairfile import read_labelled_pairs, read_pairs
from cai.errors import Failure, UsageError
from cai.judge import Judge, JudgeSettings, PairInput, PairVerdict
from cai.records import (TIES, AppendWriter, GenerationRecord, PreferenceRecord, RunFolder, code_version, read_rows,
                         record_id)
from cai.runloop import BatchRun
from cai.window import AUTO, Window

REVISION_FLIPS = "judge preferred the initial answer over the revision"


@dataclass
class JudgeSummary:
    judged: int = 0
    skipped: int = 0
    ties: int = 0
    orders: PositionTally = field(default_factory=PositionTally)  # position consistency (cai/judge/figures.py)
    identical: int = 0
    flips: int = 0
    unpaired: int = 0
    too_long: int = 0  # pairs that do not fit the judge's context: ties with a reason, never asked
    seconds: float = 0.0
    tie_ids: list[str] = field(default_factory=list)
    ties_where: str = f"listed in {TIES}"
    flips_note: str = REVISION_FLIPS
    calibration: dict | None = None
    window: Window | None = None  # pairs in flight, and how that was chosen
    stats: dict | None = None  # judge_stats: length and position bias on the judged data itself

    @property
    def consistent(self) -> int:
        return self.orders.consistent

    @property
    def position_consistency(self) -> float | None:
        """Share of pairs decided in both orders with the same winner in both (cai/judge/figures.py:
        every command counts it that way)."""
        return self.orders.position_consistency

    def lines(self) -> list[str]:
        rate = self.judged / self.seconds if self.seconds else 0.0
        cons = self.position_consistency
        left_out = f"; {self.identical} identical pairs left out" if self.identical else ""
        out = [
            f"pairs judged         {self.judged}  ({rate:.2f} pairs/s)",
            f"skipped (resumed)    {self.skipped}",
            f"ties                 {self.ties}" + (f"  ({self.ties_where})" if self.ties else ""),
            f"position consistency {'n/a' if cons is None else f'{cons:.1%}'}  (same winner in both orders, of "
            f"{self.orders.decided} pairs decided in both{left_out}; undecided in an order: "
            f"{_pct(self.orders.undecided_orders)})",
            f"flips                {self.flips}  ({self.flips_note})",
            *([f"window               {self.window.size} pairs in flight ({self.window.how})"] if self.window else []),
            f"time                 {self.seconds:.1f} s",
        ]
        if self.unpaired:
            out.insert(2, f"not paired           {self.unpaired}  (generations without a revision round)")
        if self.too_long:
            out.insert(2, f"too long             {self.too_long}  (do not fit the judge's context: ties, with the reason)")
        if self.stats:
            st = self.stats
            out.insert(-1, f"bias on this data    longer answer wins {_pct(st['longer_wins'])}, answer shown first wins "
                           f"{_pct(st['first_wins'])} of single-order verdicts  ({st['decided']} decided pairs; "
                           "50% is no bias)")
        out = calibration_lines(self.calibration) + out
        if self.calibration and self.calibration.get("below_floor"):
            out.append("BELOW THE FLOOR      " + floor_paragraph(self.calibration))
        return out

    def count(self, verdict: PairVerdict, tie: bool) -> None:
        self.judged += 1
        self.identical += verdict.identical
        self.too_long += verdict.reason is not None
        self.orders.add(verdict.p_first, verdict.p_second, asked=verdict.asked)
        if tie:
            self.ties += 1


def _pct(x) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def bias_stats(rows) -> dict:
    """judge_stats: over decided pairs, the share won by the longer answer and the share of single-order
    verdicts won by the answer shown first (cai/judge/figures.py). Rows, streamed: (winner's text,
    loser's text, p_first, p_second), p_first/p_second about the winner (P(it wins) shown first / second)."""
    tally = BiasTally()
    for win, lose, p_first, p_second in rows:
        tally.add(win, lose, p_first, p_second)
    return {"decided": tally.decided, "longer_wins": tally.longer_wins, "first_wins": tally.first_wins}


def ensure_calibration(judge: Judge, source: str | None, *, window: int, min_agreement: float,
                       old: dict | None, log: Callable[[str], None]) -> dict | None:
    """The judge's calibration: the earlier one when it was made with the same settings, else measured now."""
    if source == "none":
        return {"skipped": True}
    key = settings_key(judge, source)
    if old and old.get("settings") == key and not old.get("skipped"):
        return with_floor({**old, "reused": True}, min_agreement)
    log("judge: calibrating on labelled pairs with the judge's own settings (--calibration none skips it)")
    cal = calibrate(judge, source, window=window, min_agreement=min_agreement, key=key)
    if cal.get("reused"):
        log("judge: calibration measured earlier with the same judge, settings and set: reused")
    return cal


def _check_floor(cal: dict | None, strict: bool) -> None:
    if not cal or not cal.get("below_floor"):
        return
    if strict:
        raise Failure(floor_paragraph(cal) + " (--strict: nothing was judged)")


class RunUnits:
    """The pairs to judge in a run folder, read from generations.jsonl in one streamed pass each time
    they are iterated, so judging a run of any size holds a window of rows, not the run.

    A unit is (source generations, PairInput or None). `revision`: one per generation with a revision
    round. `samples`: one per prompt, its samples in sample order; a prompt's group is complete at the
    run's `samples` count (its rows may be far apart when a resumed run finished a half-done prompt),
    and groups still open at the end of the file (a sample that failed) are paired with what they have.
    """

    def __init__(self, run: RunFolder, strategy: str):
        if strategy not in ("revision", "samples"):
            raise UsageError(f"unknown strategy {strategy!r}: revision or samples")
        self.run, self.strategy = run, strategy
        samples = run.info().get("samples")
        self.samples = samples if isinstance(samples, int) and samples >= 2 else None

    def __iter__(self) -> Iterator[tuple[list[GenerationRecord], PairInput | None]]:
        rows = (GenerationRecord.model_validate(r) for r in read_rows(self.run.generations))
        if self.strategy == "revision":
            for g in rows:
                if g.rounds:
                    yield [g], PairInput(key=g.id, prompt=g.prompt, a=g.final, b=g.initial)
            return
        open_groups: dict[str, list[GenerationRecord]] = {}
        for g in rows:
            key = json.dumps(g.prompt, sort_keys=True)
            group = open_groups.setdefault(key, [])
            group.append(g)
            if self.samples is not None and len(group) >= self.samples:
                del open_groups[key]
                yield sorted(group, key=lambda r: r.sample), None
        for group in open_groups.values():
            if len(group) >= 2:
                yield sorted(group, key=lambda r: r.sample), None

    def check(self, run_dir: Path) -> tuple[int, int]:
        """(units, generations left unpaired), counted in one pass; exit 2 when there is nothing to pair."""
        units = generations = 0
        for src, _ in self:
            units += 1
            generations += len(src)
        total = sum(1 for _ in read_rows(self.run.generations))
        if self.strategy == "revision" and total and not units:
            raise UsageError(
                f"{run_dir}: --strategy revision pairs each final revision with its initial answer, but none of "
                f"the {total} generations has a revision round (made with `cai generate --rounds 0`?): "
                "nothing to judge. Generate with --rounds 1 or more, or use --strategy samples on a run made "
                "with --samples N (N >= 2)")
        if self.strategy == "samples" and not units:
            raise UsageError(f"{run_dir}: --strategy samples needs `cai generate --samples N` with N >= 2")
        return units, (total - generations if self.strategy == "revision" else 0)


def sizing_items(units) -> Iterator[tuple[PairInput, int]]:
    """The pairs of `units` as `Judge.window` sizes them: a revision pair as it is; a prompt's samples
    as its two longest answers, asked about every pair of the group."""
    for src, item in units:
        if item is not None:
            yield item, 1
        else:
            a, b = sorted((g.final for g in src), key=len, reverse=True)[:2]
            yield PairInput(key=src[0].id, prompt=src[0].prompt, a=a, b=b), len(src) * (len(src) - 1) // 2


def judge_run(run_dir: Path, judge: Judge, strategy: str, *, window: int | str = AUTO, shard=None,
              progress: bool = True, force_new: bool = False, calibration: str | None = "none",
              min_agreement: float = MIN_AGREEMENT, strict: bool = False, engine: dict | None = None,
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> JudgeSummary:
    """Judge a run folder into preferences.jsonl (and ties.jsonl); resumes a run judged the same
    way, refuses one judged with other settings unless `force_new` (which starts the pairs over). Ties
    by the judge's own threshold (`judge.threshold`). `shard` (cai.inputs.Shard): only the pairs whose
    id falls in it, recorded with the judge's settings (`cai merge` joins the shards' folders).
    `engine`: the engine settings given (tensor parallelism, quantization, ...), recorded with them."""
    run = RunFolder(run_dir)
    if not run.generations.exists():
        raise UsageError(f"{run_dir}: no {run.generations.name}; run `cai generate --run-dir {run_dir}` first")
    threshold = judge.threshold
    judge_ident = record_id(judge.describe(), judge.constitution.sha256(), strategy)
    summary = JudgeSummary()
    if strategy == "samples":
        summary.flips_note = "samples: best against worst, nothing to flip"
    units = RunUnits(run, strategy)
    n_units, summary.unpaired = units.check(run_dir)
    if summary.unpaired:
        log(f"judge: {summary.unpaired} generations have no revision round and are not paired")
    meta = {**judge.describe(), "code_version": code_version(), "constitution_sha256": judge.constitution.sha256()}
    lock = run.lock()
    try:
        # Recorded before the first pair, so a rerun after a crash is checked against it too.
        run.start_judge({**meta, "threshold": threshold, "strategy": strategy,
                         "constitution_name": judge.constitution.name, **({"engine": engine} if engine else {}),
                         **({"shard": shard.record()} if shard else {})},
                        force_new=force_new)
        # Beside the judge's settings, not among them: another window judges the same pairs.
        summary.window = judge.window(window, sizing_items(units))
        run.update_info(judge_window=summary.window.record())
        summary.calibration = ensure_calibration(judge, calibration, window=summary.window.size,
                                                 min_agreement=min_agreement,
                                                 old=run.info().get("judge_calibration"), log=log)
        run.update_info(judge_calibration={k: v for k, v in summary.calibration.items() if k != "reused"})
        _check_floor(summary.calibration, strict)
        with AppendWriter(run.preferences) as prefs, AppendWriter(run.ties) as ties:
            def pair_id(src: list[GenerationRecord]) -> str:
                return record_id("pref", [g.id for g in src], judge_ident)

            def mine():
                for src, item in units:
                    pid = pair_id(src)
                    if shard is None or in_shard(pid, shard.index, shard.count):
                        yield pid, src, item

            def pending():
                for pid, src, item in mine():
                    if pid not in prefs and pid not in ties:
                        yield pid, src, item

            if shard is not None:
                n_units = sum(1 for _ in mine())
            summary.skipped = sum(1 for pid, _, _ in mine() if pid in prefs or pid in ties)
            total = n_units - summary.skipped

            def flush():
                prefs.flush()
                ties.flush()

            loop = BatchRun(Batcher(judge.backend), total=total, unit="pair", progress=progress, flush=flush)
            pair = _revision_pair if strategy == "revision" else _samples_pair

            def jobs():
                for pid, src, item in pending():
                    yield lambda pid=pid, src=src, item=item: pair(judge, loop.batcher, pid, src, item)

            def done(r: JudgedPair) -> None:
                v = r.verdict
                tie = v.is_tie(threshold) or r.tie_reason is not None
                summary.count(v, tie)
                record = PreferenceRecord(
                    id=r.id, prompt=r.sources[0].prompt, category=r.sources[0].category, chosen=r.chosen,
                    rejected=r.rejected, p_chosen=r.p_chosen, judgements=v.judgements, strategy=strategy,
                    source_ids=[g.id for g in r.sources], chosen_flags=list(r.chosen_flags),
                    rejected_flags=list(r.rejected_flags),
                    meta={**meta, "flipped": r.flipped, "p_first": v.p_first, "p_second": v.p_second})
                if tie:
                    summary.tie_ids.append(r.id)
                    reason = v.reason or r.tie_reason
                    ties.write([{**record.model_dump(mode="json"), "tie": True, **({"reason": reason} if reason else {})}])
                else:
                    check_decided(record, threshold)
                    summary.flips += r.flipped
                    prefs.write([record])

            loop.run(jobs(), done, window=summary.window.size)
            summary.seconds = loop.seconds
        summary.stats = bias_stats((p["chosen"], p["rejected"], (p.get("meta") or {}).get("p_first", 0.5),
                                    (p.get("meta") or {}).get("p_second", 0.5)) for p in read_rows(run.preferences))
        run.update_info(judge_stats=summary.stats)
    finally:
        lock.release()
    return summary


@dataclass(frozen=True)
class JudgedPair:
    """One pair of a run, judged: chosen and rejected as the verdict orders them."""

    id: str
    sources: list[GenerationRecord]
    verdict: PairVerdict  # about (chosen, rejected)
    chosen: str
    rejected: str
    p_chosen: float
    flipped: bool = False  # revision strategy: the judge preferred the initial answer
    chosen_flags: tuple[str, ...] = ()
    rejected_flags: tuple[str, ...] = ()
    tie_reason: str | None = None  # samples strategy: why a decided-looking pair is a tie all the same


def check_decided(record: PreferenceRecord, threshold: float) -> None:
    """Every pair written to preferences.jsonl is decided by the tie rule for its chosen side: a
    pair that is not would train the policy towards an answer the judge did not prefer."""
    if not record.p_chosen >= 0.5 + threshold - 1e-9:
        raise RuntimeError(f"pair {record.id}: p_chosen {record.p_chosen:.4f} is not past the tie threshold "
                           f"{threshold}; it must be a tie (a bug in cai: please report it)")


async def _revision_pair(judge: Judge, batcher: Batcher, pid: str, src: list[GenerationRecord],
                         item: PairInput) -> JudgedPair:
    g = src[0]
    v = await judge.averdict(batcher, item)
    final, initial = tuple(g.flags), tuple(g.initial_flags)
    if v.p_a >= 0.5:
        return JudgedPair(pid, src, v, g.final, g.initial, v.p_a, chosen_flags=final, rejected_flags=initial)
    return JudgedPair(pid, src, v.swapped(), g.initial, g.final, 1.0 - v.p_a, flipped=True, chosen_flags=initial,
                      rejected_flags=final)


async def _samples_pair(judge: Judge, batcher: Batcher, pid: str, group: list[GenerationRecord],
                        item: PairInput | None = None) -> JudgedPair:
    """The best and the worst of a prompt's samples, by mean win probability over all pairs of them
    (`item` is unused: every pair of the group is its own question). The pair's verdict is the judge's
    direct one of those two; a small judge is often not transitive (A beats B, B beats C, C beats A),
    so when the direct verdict prefers the answer ranked worst, or is within the tie threshold, the
    pair is a tie with the reason, never a pair whose chosen answer lost the comparison."""
    texts = [g.final for g in group]
    combos = list(itertools.combinations(range(len(group)), 2))
    verdicts = await asyncio.gather(*(
        judge.averdict(batcher, PairInput(key=f"{pid}:{i}:{j}", prompt=group[0].prompt, a=texts[i], b=texts[j]))
        for i, j in combos
    ))
    wins = [0.0] * len(group)
    for (i, j), v in zip(combos, verdicts):
        wins[i] += v.p_a
        wins[j] += 1.0 - v.p_a
    best = max(range(len(group)), key=lambda k: (wins[k], -k))
    worst = min(range(len(group)), key=lambda k: (wins[k], k))
    if best == worst:  # everything tied: any pair is a tie
        worst = next(k for k in range(len(group)) if k != best)
    i, j = sorted((best, worst))
    v = verdicts[combos.index((i, j))]
    if best != i:  # the direct verdict is about (i, j); turn it to (best, worst)
        v = v.swapped()
    reason = None
    if not v.is_tie(judge.threshold) and v.p_a < 0.5:
        n = len(group) - 1
        reason = (f"the judge ranks sample {group[best].sample} best and {group[worst].sample} worst by mean win "
                  f"probability ({wins[best] / n:.3f} against {wins[worst] / n:.3f}), but prefers "
                  f"{group[worst].sample} when the two are compared directly (p {1 - v.p_a:.3f}): its verdicts "
                  "are not transitive here")
    return JudgedPair(pid, group, v, texts[best], texts[worst], v.p_a, chosen_flags=tuple(group[best].flags),
                      rejected_flags=tuple(group[worst].flags), tie_reason=reason)


@dataclass(frozen=True)
class JudgedRow:
    """One row of an outside pairs file, judged as given."""

    row: dict
    verdict: PairVerdict


def calibration_path(out_path: Path) -> Path:
    return out_path.with_name(out_path.name + ".calibration.json")


def judge_pairs_file(in_path: Path, out_path: Path, judge: Judge, *, window: int | str = AUTO,
                     progress: bool = True, calibration: str | None = "none", min_agreement: float = MIN_AGREEMENT,
                     strict: bool = False, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)
                     ) -> JudgeSummary:
    """Judge outside pairs: rows {id, prompt (string or messages), response_a, response_b}. The judge's
    calibration goes to OUT.calibration.json beside the output."""
    rows = read_pairs(in_path)
    threshold = judge.threshold
    # Pairs are judged as given: no file of ties beside them, and nothing is flipped.
    summary = JudgeSummary(ties_where=f'rows with winner "tie" in {out_path}',
                           flips_note="pairs mode compares the responses as given, nothing is flipped")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    cal_file = calibration_path(out_path)
    old, old_judge = None, None
    if cal_file.exists():
        try:
            saved = json.loads(cal_file.read_text())
            old, old_judge = saved.get("judge_calibration"), saved.get("judge")
        except (json.JSONDecodeError, AttributeError):
            pass
    settings = judge.describe()
    if old_judge and old_judge != settings and next(read_rows(out_path), None) is not None:
        changed = sorted(k for k in set(old_judge) | set(settings) if old_judge.get(k) != settings.get(k))
        raise UsageError(f"{out_path} holds rows judged with other settings ({', '.join(changed)}); a resumed "
                         "file must keep one judge. Choose another --out")
    summary.window = judge.window(window, ((PairInput(key=str(r["id"]), prompt=p, a=r["response_a"],
                                                      b=r["response_b"]), 1) for r, p in rows))
    summary.calibration = ensure_calibration(judge, calibration, window=summary.window.size,
                                             min_agreement=min_agreement, old=old, log=log)
    # The window beside the judge's settings, not among them: another window judges the same pairs.
    _write_json(cal_file, {"judge_calibration": {k: v for k, v in summary.calibration.items() if k != "reused"},
                           "judge": settings, "window": summary.window.record()})
    _check_floor(summary.calibration, strict)
    with AppendWriter(out_path) as out:
        todo = [(r, p) for r, p in rows if str(r["id"]) not in out]
        summary.skipped = len(rows) - len(todo)
        loop = BatchRun(Batcher(judge.backend), total=len(todo), unit="pair", progress=progress, flush=out.flush)

        def jobs():
            for row, prompt in todo:
                async def job(row=row, prompt=prompt) -> JudgedRow:
                    item = PairInput(key=str(row["id"]), prompt=prompt, a=row["response_a"], b=row["response_b"])
                    return JudgedRow(row, await judge.averdict(loop.batcher, item))
                yield job

        def done(r: JudgedRow) -> None:
            v = r.verdict
            winner = v.winner(threshold)
            summary.count(v, winner == "tie")
            out.write([{**r.row, "id": str(r.row["id"]), "p_a": v.p_a, "p_first": v.p_first, "p_second": v.p_second,
                        "winner": winner, "question_ids": v.question_ids,
                        **({"reason": v.reason} if v.reason else {})}])

        loop.run(jobs(), done, window=summary.window.size)
        summary.seconds = loop.seconds
    decided = [r for r in read_rows(out_path) if r.get("winner") in ("a", "b")]
    summary.stats = bias_stats(
        (r["response_a"], r["response_b"]) [:: 1 if r["winner"] == "a" else -1] + (r["p_first"], r["p_second"])
        for r in decided)
    data = json.loads(cal_file.read_text())
    _write_json(cal_file, {**data, "judge_stats": summary.stats})
    return summary


class JudgeRunConfig(JudgeSettings):
    """`cai judge`: the judge, and what it judges (a run folder, or a pairs file into `out`)."""

    run_dir: str | None = Field(None, description="A folder made by `cai generate`: writes its preferences.jsonl.")
    pairs: str | None = Field(None, description="Outside pairs {id, prompt, response_a, response_b}, instead of a run.")
    out: str | None = Field(None, description="With pairs: where the judged rows go.")
    force_new: bool = Field(False, description="Judge the run folder again from scratch (clears its pairs and ties).")
    shard: str | None = Field(None, description="I/N: judge only the pairs whose id falls in shard I of N.")

    @field_validator("shard")
    @classmethod
    def _shard(cls, v):
        from cai.inputs import parse_shard

        return None if v is None else str(parse_shard(v))


def run_judge(cfg: JudgeRunConfig, *, backend=None, progress: bool = True,
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> JudgeSummary:
    """`cai judge`: every input is checked before the judge's engine starts (a bad row should not
    cost a minute of model loading), then the run folder or the pairs file is judged."""
    if bool(cfg.run_dir) == bool(cfg.pairs):
        raise UsageError("give either RUN_DIR or --pairs FILE --out FILE")
    if cfg.pairs and not cfg.out:
        raise UsageError("--pairs needs --out FILE")
    if cfg.pairs and cfg.shard:
        raise UsageError("--shard applies to RUN_DIR; split a --pairs file into parts instead")
    if cfg.pairs and cfg.force_new:
        raise UsageError("--force-new applies to RUN_DIR; with --pairs, choose another --out to start over")
    if cfg.pairs:
        read_pairs(Path(cfg.pairs))
    if cfg.calibration not in (None, "none", "default"):
        from cai.judge.calibration import resolve_source

        read_labelled_pairs(resolve_source(cfg.calibration))
    if cfg.run_dir and not cfg.constitution and not RunFolder(cfg.run_dir).info():
        raise UsageError(f"{cfg.run_dir}: not a run folder (no run.yaml)")
    from cai.judge import build_judge, choose_constitution

    constitution = choose_constitution(cfg.constitution, run_dir=cfg.run_dir, log=log).constitution
    judge = build_judge(cfg, constitution, backend=backend)
    how = dict(window=cfg.chunk_size, progress=progress, calibration=cfg.calibration,
               min_agreement=cfg.min_agreement, strict=cfg.strict, log=log)
    if cfg.pairs:
        return judge_pairs_file(Path(cfg.pairs), Path(cfg.out), judge, **how)
    from cai.inputs import parse_shard

    return judge_run(Path(cfg.run_dir), judge, cfg.strategy, force_new=cfg.force_new, engine=cfg.engine_settings(),
                     shard=parse_shard(cfg.shard),
                     **how)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)
