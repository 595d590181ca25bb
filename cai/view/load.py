"""What a folder holds, read into the plain data one page shows.

Three kinds of folder: a run (`cai generate`, then `cai judge`), an eval (`cai eval`) and an
iterate folder (`DIR/history.jsonl`, `DIR/iterations/NN/{run,model,eval}`). Every loader returns a
JSON-ready dict; nothing here formats HTML, and every figure the page shows is computed here.
Rows are read as they are on disk (unknown fields pass through to the page's `meta` view), so a
run made by an older or newer cai still opens.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from array import array
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import numpy as np

from cai.errors import UsageError
from cai.quality import FLAGS, INFORMATIVE, excluding
from cai.records import GENERATIONS, PREFERENCES, RUN_YAML, TIES, read_rows, read_run_yaml
from cai.view import analytics, page, sample

RUN, EVAL, ITERATE = "run", "eval", "iterate"
METRICS, ANSWERS, REPORT = "metrics.json", "answers.jsonl", "report.md"
HISTORY, ITERATIONS, CURVE = "history.jsonl", "iterations", "curve.png"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A plot bigger than this is left out with a note: the page must stay mailable.
MAX_IMAGE_BYTES = 8 << 20
# Flags shown in red: those that keep a text out of training.
BAD_FLAGS = [f for f in FLAGS if f not in INFORMATIVE]


def detect(path: Path) -> str:
    """The kind of folder PATH is; a usage error naming what was looked for otherwise."""
    if not path.is_dir():
        raise UsageError(f"{path}: not a folder (cai view reads a run, eval or iterate folder)")
    if (path / HISTORY).exists() or (path / ITERATIONS).is_dir():
        return ITERATE
    if (path / METRICS).exists() and (path / ANSWERS).exists():
        return EVAL
    if (path / GENERATIONS).exists():
        return RUN
    if (path / RUN_YAML).exists():
        raise UsageError(f"{path}: a run folder without {GENERATIONS} yet: nothing to show")
    raise UsageError(f"{path}: not a run, eval or iterate folder (none of {GENERATIONS}, {METRICS} with "
                     f"{ANSWERS}, or {HISTORY} is there)")


# ---------------------------------------------------------------- reading files

def scan(path: Path) -> Iterator[tuple[int, dict]]:
    """(byte offset, row) for each row of a JSONL file, streamed, under read_rows' rules: a torn
    last line (no newline) is skipped, a line that is not JSON is a usage error naming it."""
    if not path.exists():
        return
    with open(path, "rb") as fh:
        offset = 0
        for n, line in enumerate(fh, 1):
            at, offset = offset, offset + len(line)
            if not line.endswith(b"\n"):
                return
            if line.strip():
                yield at, _parse(line, path, n)


def _parse(line: bytes, path: Path, n: int | str) -> dict:
    try:
        return json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        raise UsageError(f"{path}:{n}: not UTF-8 text; the file was edited or damaged") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}:{n}: not valid JSON ({exc.msg}); the file was edited or damaged") from None


class Lines:
    """Rows of a JSONL file read back by the offsets scan() gave: one seek and one line each."""

    def __init__(self, path: Path):
        self.path = path
        self._fh = open(path, "rb") if path.exists() else None

    def row(self, offset: int) -> dict:
        self._fh.seek(offset)
        return _parse(self._fh.readline(), self.path, f"byte {offset}")

    def close(self) -> None:
        if self._fh:
            self._fh.close()


# ---------------------------------------------------------------- run folders

LABELS = (analytics.DECIDED, analytics.FLIP, analytics.TIE)
UNJUDGED = len(LABELS)


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


class SharedMeta:
    """The meta every row shares, kept one row at a time (the first row's meta, less each key a
    later row lacks or holds otherwise): stored once on the page, so a 10,000-row page does not
    carry 10,000 copies of the sampling settings."""

    def __init__(self):
        self.shared: dict | None = None
        self._json: dict[str, str] = {}

    def add(self, meta: dict) -> None:
        if self.shared is None:
            self.shared = dict(meta)
            self._json = {k: json.dumps(v, sort_keys=True) for k, v in meta.items()}
            return
        for k in [k for k in self.shared if k not in meta or json.dumps(meta[k], sort_keys=True) != self._json[k]]:
            del self.shared[k], self._json[k]

    def own(self, meta: dict) -> dict:
        return {k: v for k, v in meta.items() if k not in (self.shared or {})}


def split_meta(metas: list[dict]) -> tuple[dict, list[dict]]:
    """(the meta every row shares, each row's own remainder)."""
    acc = SharedMeta()
    for m in metas:
        acc.add(m)
    return acc.shared or {}, [acc.own(m) for m in metas]


def _orders(pair: dict) -> tuple[float | None, float | None]:
    meta = pair.get("meta") or {}
    if "p_first" in meta and "p_second" in meta:
        return meta["p_first"], meta["p_second"]
    js = pair.get("judgements") or []
    if not js:
        return None, None
    return sum(j["p_first"] for j in js) / len(js), sum(j["p_second"] for j in js) / len(js)


def _verdict(pair: dict, gen: dict) -> dict:
    """What the page says about one row's judging. Probabilities are of the revision beating the
    initial answer (`revision`), or of the chosen sample beating the rejected one (`samples`)."""
    label = analytics.verdict_label(pair)
    p_first, p_second = _orders(pair)
    out = {"label": label, "strategy": pair.get("strategy"), "pair_id": pair.get("id"),
           "p_first": p_first, "p_second": p_second, "judgements": pair.get("judgements") or [],
           "asked": analytics.was_asked(pair), "reason": pair.get("reason")}
    flipped = bool((pair.get("meta") or {}).get("flipped"))
    p_chosen = pair.get("p_chosen")
    if pair.get("strategy") == "revision":
        out["p"] = None if p_chosen is None else (1.0 - p_chosen if flipped else p_chosen)
    else:
        final = gen.get("final", "")
        out["p"] = p_chosen
        out["role"] = ("chosen" if final == pair.get("chosen") else "rejected" if final == pair.get("rejected")
                       else "compared")
        out["group"] = pair.get("source_ids") or []
        # The page's labelling mode shows the pair's two answers; the one the row holds is not
        # repeated (a revision pair's two answers are the row's own initial and final answer).
        out["answers"] = {side: pair.get(side) for side in ("chosen", "rejected") if out["role"] != side}
    return out


class PairIndex:
    """Which pair judged each generation row, for a run of any size: the 64-bit hash of every
    source id a pair names with a reference to that pair (its file, byte offset and label), 16
    bytes per id in sorted arrays, instead of the pairs themselves. As with a dict filled in file
    order (preferences, then ties), the last pair naming an id is the one that counts."""

    def __init__(self):
        self._h, self._ref = array("Q"), array("q")
        self._score_h, self._score = array("Q"), array("b")  # revision pairs: their first source, 2 x score

    def add(self, pair: dict, file_no: int, offset: int) -> None:
        label = analytics.verdict_label(pair)
        ref = (offset << 3) | (file_no << 2) | LABELS.index(label)
        sources = pair.get("source_ids") or []
        for sid in sources:
            self._h.append(sample.row_hash(sid))
            self._ref.append(ref)
        if pair.get("strategy") == "revision" and sources:
            self._score_h.append(sample.row_hash(sources[0]))
            self._score.append(int(2 * analytics.SCORE[label]))

    def freeze(self) -> None:
        h = np.frombuffer(self._h, dtype=np.uint64) if len(self._h) else np.zeros(0, np.uint64)
        ref = np.frombuffer(self._ref, dtype=np.int64) if len(self._ref) else np.zeros(0, np.int64)
        order = np.argsort(h, kind="stable")
        h, ref = h[order], ref[order]
        last = np.r_[h[1:] != h[:-1], True] if len(h) else np.zeros(0, bool)
        self.h, self.ref = h[last], ref[last]
        self.score_h = np.frombuffer(self._score_h, dtype=np.uint64) if len(self._score_h) else np.zeros(0, np.uint64)
        self.score = np.frombuffer(self._score, dtype=np.int8) if len(self._score) else np.zeros(0, np.int8)
        self._h = self._ref = None

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """Each hash's pair reference, -1 where no pair names it."""
        return _match(self.h, self.ref, hashes)


def _match(keys: np.ndarray, values: np.ndarray, hashes: np.ndarray) -> np.ndarray:
    """values[k] where keys[k] == hash (keys sorted, unique), -1 elsewhere."""
    if not len(keys):
        return np.full(len(hashes), -1, dtype=np.int64)
    at = np.minimum(np.searchsorted(keys, hashes), len(keys) - 1)
    return np.where(keys[at] == hashes, values[at], -1).astype(np.int64)


def _ids(names: dict, name) -> int:
    return names.setdefault(name, len(names))


def label_key(path: Path) -> str:
    """The key a run's labelling marks are kept under in the browser: one per run folder wherever
    the page was written from, and no path spelled out in the page beyond its title."""
    return hashlib.sha256(str(path.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:16]


def load_run(path: Path, rows: sample.Limit | str | int | None = None) -> dict:
    """The page's data for a run folder. Memory stays flat in the run's size: the pairs and the
    generations are streamed (figures counted as they pass, about 45 bytes kept per row and per
    judged id for the join and the sample), and only the rows the page embeds are read back whole.
    `rows`: the limit on them (sample.parse_limit; default: the page's byte budget)."""
    limit = sample.parse_limit(rows)
    info = read_run_yaml(path / RUN_YAML) if (path / RUN_YAML).is_file() else {}
    snapshot = info.get("constitution") or {}
    principles = {p["id"]: {k: p.get(k) for k in ("critique", "revision", "weight", "tags")}
                  for p in snapshot.get("principles") or [] if isinstance(p, dict) and "id" in p}
    questions = {c["id"]: c.get("question") for c in snapshot.get("comparisons") or []
                 if isinstance(c, dict) and "id" in c}
    counts = {"rows": 0, "pairs": 0, "unjudged": 0, "flagged": 0,
              analytics.DECIDED: 0, analytics.FLIP: 0, analytics.TIE: 0}

    # Pass 1, the pairs: their counts and questions, and the index that joins them to the rows.
    pair_files = (path / PREFERENCES, path / TIES)
    index, qtally = PairIndex(), analytics.QuestionTally(order=questions)
    for file_no, f in enumerate(pair_files):
        for offset, p in scan(f):
            if file_no == 1:
                p = {**p, "tie": True}
            counts["pairs"] += 1
            counts[analytics.verdict_label(p)] += 1
            qtally.add(p)
            index.add(p, file_no, offset)
    index.freeze()

    # Pass 2, the generations: their figures, and per row what the sample needs.
    ptally = analytics.PrincipleTally(order=principles)
    meta = SharedMeta()
    flag_names: set[str] = set()
    categories: dict = {}
    last_ids: dict = {}
    hashes, offsets, cats, lasts, flagged = array("Q"), array("q"), array("i"), array("i"), array("b")
    for offset, g in scan(path / GENERATIONS):
        last = ptally.add(g)
        meta.add(g.get("meta") or {})
        flags = g.get("flags") or []
        flag_names.update(flags, g.get("initial_flags") or [])
        for r in g.get("rounds") or []:
            flag_names.update(r.get("flags") or [])
        bad = bool(excluding(flags))
        counts["rows"] += 1
        counts["flagged"] += bad
        hashes.append(sample.row_hash(g.get("id")))
        offsets.append(offset)
        cats.append(_ids(categories, g.get("category") or "(none)"))
        lasts.append(-1 if last is None else _ids(last_ids, last))
        flagged.append(bad)
    n = counts["rows"]
    h = np.frombuffer(hashes, dtype=np.uint64) if n else np.zeros(0, np.uint64)
    last = np.frombuffer(lasts, dtype=np.int32) if n else np.zeros(0, np.int32)
    refs = index.lookup(h)
    labels = np.where(refs >= 0, refs & 3, UNJUDGED).astype(np.int8)
    counts["unjudged"] = int((refs < 0).sum())

    # Each revision pair's verdict counts for the principle of its row's last round (the last row
    # with rounds, where an id repeats).
    with_rounds = np.flatnonzero(last >= 0)
    by_hash = with_rounds[np.argsort(h[with_rounds], kind="stable")]
    keep = np.r_[h[by_hash][1:] != h[by_hash][:-1], True] if len(by_hash) else np.zeros(0, bool)
    by_hash = by_hash[keep]
    row_of = _match(h[by_hash], by_hash.astype(np.int64), index.score_h)
    pid_names = list(last_ids)
    for row, units in zip(row_of.tolist(), index.score.tolist()):
        if row >= 0:
            ptally.judged(pid_names[last[row]], units / 2)

    del with_rounds, by_hash, keep, row_of
    index = None  # the pairs' index has done its work: `refs` holds each row's pair

    # Strata: category x last round's principle x verdict.
    key = (np.frombuffer(cats, dtype=np.int32).astype(np.int64) * (len(last_ids) + 1) + last + 1) * 4 + labels
    stratum_keys, strata = np.unique(key, return_inverse=True) if n else (np.zeros(0, np.int64), np.zeros(0, np.int64))
    strata = strata.astype(np.int32)
    priority = np.frombuffer(flagged, dtype=np.int8).astype(bool) if n else np.zeros(0, bool)
    priority |= labels == LABELS.index(analytics.FLIP)
    del key, labels, last, cats, lasts, flagged

    shared = meta.shared or {}
    gen_lines, pair_lines = Lines(path / GENERATIONS), [Lines(f) for f in pair_files]
    offs = np.frombuffer(offsets, dtype=np.int64) if n else np.zeros(0, np.int64)

    def build(i: int) -> bytes:
        g = gen_lines.row(int(offs[i]))
        row = {k: v for k, v in g.items() if k != "meta"}
        rounds = g.get("rounds") or []
        # The final answer is the last revision (or the initial answer): stored only where it is not.
        derived = rounds[-1].get("revision") if rounds else g.get("initial")
        if row.get("final") == derived:
            del row["final"]
        row["meta"] = meta.own(g.get("meta") or {})
        ref = int(refs[i])
        pair = None
        if ref >= 0:
            file_no = (ref >> 2) & 1
            pair = pair_lines[file_no].row(ref >> 3)
            if file_no == 1:
                pair = {**pair, "tie": True}
        row["verdict"] = _verdict(pair, g) if pair else None
        return page.embed_json(row).encode("utf-8")

    try:
        chosen = sample.choose(h, strata, priority, limit, build)
    finally:
        gen_lines.close()
        for f in pair_lines:
            f.close()

    header = {k: v for k, v in info.items() if k != "constitution"}
    cat_names, pid_names = list(categories), ["(no rounds)"] + pid_names
    labels_of = LABELS + ("unjudged",)
    described = []
    for k, total, shown in zip(stratum_keys.tolist(), np.bincount(strata, minlength=len(stratum_keys)).tolist(),
                               chosen.stratum_shown.tolist()):
        described.append([cat_names[k // 4 // len(pid_names)], pid_names[k // 4 % len(pid_names)], labels_of[k % 4],
                          total, shown])
    data = {
        "kind": RUN, "title": str(path), "info": header, "constitution": snapshot.get("name"),
        "strategy": (info.get("judge") or {}).get("strategy"), "bad_flags": BAD_FLAGS,
        "principles": principles, "questions": questions, "shared_meta": shared,
        "rows": page.JsonRows([text for _, text in chosen.rows]),
        "counts": counts, "analytics": {"principles": analytics.as_dicts(ptally.stats()),
                                        "questions": analytics.as_dicts(qtally.stats())},
        "flag_names": sorted(flag_names), "label_key": label_key(path),
    }
    data["sample"] = _sample_note(chosen, n, limit, described, "flagged or flipped",
                                  ("category", "principle", "verdict"))
    if data["sample"]["shown"] < n:
        data["row_numbers"] = [i + 1 for i, _ in chosen.rows]
    return data


def _sample_note(chosen: sample.Chosen, total: int, limit: sample.Limit, strata: list, priority_kind: str | None,
                 strata_by: tuple[str, ...]) -> dict:
    """What the page says about which rows it holds: "showing N of M rows (how chosen)"."""
    shown = len(chosen.rows)
    if shown == total:
        how = "every row"
    else:
        parts = []
        if priority_kind and chosen.priority_total:
            parts.append(f"every {priority_kind} row first, lowest hash first, up to half the page: "
                         f"{chosen.priority:,} of {chosen.priority_total:,}")
        by = f"{', '.join(strata_by[:-1])} and {strata_by[-1]}"
        parts.append(f"{'then ' if parts else ''}a sample stratified by {by} ({len(strata):,} strata, at least "
                     f"{sample.MIN_PER_STRATUM} rows of each or all it has, the rest in proportion to their size), "
                     "ranked by a hash of the row id")
        parts.append(f"stopped at {limit.describe()}; every figure is over all {total:,} rows; "
                     "`cai view --rows all` embeds every row")
        how = "; ".join(parts)
    # The strata table: the biggest 200 strata, enough to read and bounded whatever the run.
    top = sorted(strata, key=lambda s: (-s[-2], s[:-2]))[:200]
    return {"shown": shown, "of": total, "how": how, "limit": limit.describe(),
            "text": f"showing {shown:,} of {total:,} rows ({how})", "strata_by": list(strata_by),
            "strata": top, "strata_count": len(strata), "priority": chosen.priority,
            "priority_total": chosen.priority_total, "priority_kind": priority_kind}


# ---------------------------------------------------------------- eval folders

def outcome_counts(rows: list[dict]) -> dict[str, dict]:
    """Per category: n and the number of A wins, B wins and ties, counted from answers.jsonl."""
    out: dict[str, dict] = {}
    for r in rows:
        c = out.setdefault(r.get("category") or "uncategorised", {"n": 0, "a": 0, "b": 0, "tie": 0})
        c["n"] += 1
        c[r.get("outcome") if r.get("outcome") in ("a", "b") else "tie"] += 1
    return dict(sorted(out.items()))


def flat_table(by_id: dict) -> dict:
    """{id: nested dict of figures} as columns and rows, for tables whose shape cai may grow
    (compliance: per principle, rate and mean probability for A and for B, and n)."""
    def flat(v, prefix: str):
        if isinstance(v, dict):
            for k, x in v.items():
                yield from flat(x, f"{prefix} {k}".strip())
        else:
            yield prefix or "value", v

    rows = [(pid, dict(flat(v, ""))) for pid, v in (by_id or {}).items()]
    columns: list[str] = []
    for _, cells in rows:
        columns += [c for c in cells if c not in columns]
    return {"columns": columns, "rows": [[pid] + [cells.get(c) for c in columns] for pid, cells in rows]}


def load_eval(path: Path, rows: sample.Limit | str | int | None = None) -> dict:
    """The page's data for an eval folder; answers.jsonl is streamed like a run's generations, and
    a page over the limit holds a sample stratified by category, outcome and harmful/benign."""
    limit = sample.parse_limit(rows)
    try:
        metrics = json.loads((path / METRICS).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path / METRICS}: not valid JSON ({exc})") from None
    if not isinstance(metrics, dict):
        raise UsageError(f"{path / METRICS}: not a JSON object")
    hashes, offsets, strata = array("Q"), array("q"), array("i")
    names: dict = {}

    def seen():
        for n, (offset, r) in enumerate(scan(path / ANSWERS)):
            hashes.append(sample.row_hash(r.get("index", n)))
            offsets.append(offset)
            harm = "harmful" if r.get("harmful") is True else "benign" if r.get("harmful") is False else "unlabelled"
            outcome = r.get("outcome") if r.get("outcome") in ("a", "b") else "tie"
            strata.append(_ids(names, (r.get("category") or "uncategorised", outcome, harm)))
            yield r

    categories = outcome_counts(seen())
    n = len(hashes)
    lines = Lines(path / ANSWERS)
    offs = np.frombuffer(offsets, dtype=np.int64) if n else np.zeros(0, np.int64)
    try:
        chosen = sample.choose(np.frombuffer(hashes, dtype=np.uint64) if n else np.zeros(0, np.uint64),
                               np.frombuffer(strata, dtype=np.int32).astype(np.int64) if n else np.zeros(0, np.int64),
                               np.zeros(n, dtype=bool), limit,
                               lambda i: page.embed_json(lines.row(int(offs[i]))).encode("utf-8"))
    finally:
        lines.close()
    totals = np.bincount(np.frombuffer(strata, dtype=np.int32), minlength=len(names)).tolist() if n else []
    described = [[*key, total, shown] for key, total, shown in zip(names, totals, chosen.stratum_shown.tolist())]
    data = {
        "kind": EVAL, "title": str(path), "metrics": metrics, "rows": page.JsonRows([t for _, t in chosen.rows]),
        "categories": categories,
        "compliance": flat_table(metrics.get("compliance")) if isinstance(metrics.get("compliance"), dict) else None,
        "images": images(path, [p.name for p in sorted(path.glob("*.png"))]),
        "report": _text(path / REPORT),
        "sample": _sample_note(chosen, n, limit, described, None, ("category", "outcome", "harmful or benign")),
    }
    if data["sample"]["shown"] < n:
        data["row_numbers"] = [i + 1 for i, _ in chosen.rows]
    return data


# ---------------------------------------------------------------- iterate folders

HISTORY_COLUMNS = ("iteration", "prompts", "pairs", "ties", "win_rate", "win_rate_ci", "harmlessness",
                   "over_refusal", "compliance", "train")


def history_cell(row: dict, column: str):
    """A win rate whose row says it carries no signal is shown as such, never as a bare figure."""
    value = row.get(column)
    if column == "win_rate" and row.get("signal") is False:
        return f"no signal (measured {compact(value)})"
    if column == "win_rate" and "signal" in row and row["signal"] is None:
        return f"{compact(value)} (signal not measured)"
    return compact(value)


def compact(value) -> str | float | int | None:
    """A history cell: numbers stay numbers, anything nested becomes one short line of text."""
    if isinstance(value, float):
        return round(value, 4)  # 0.6799999999999999 is 0.68 in a table
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, list):
        return "[" + ", ".join(str(compact(v)) for v in value) + "]"
    if isinstance(value, dict):
        # one level down in parentheses: "harm (rate_a 0.8, n 20); privacy (rate_a 0.6, n 20)"
        nested = any(isinstance(v, dict) for v in value.values())
        return ("; " if nested else ", ").join(
            f"{k} ({compact(v)})" if isinstance(v, dict) else f"{k} {compact(v)}" for k, v in value.items())
    return str(value)


def href(target: Path, page_dir: Path) -> str:
    """A relative link from the page to a file beside the data; percent-encoded, so a folder name
    can never turn into a `javascript:` or other scheme."""
    return quote(Path(os.path.relpath(target, page_dir)).as_posix(), safe="/")


def iteration_dirs(path: Path) -> list[tuple[int, Path]]:
    out = []
    for d in sorted((path / ITERATIONS).glob("*")) if (path / ITERATIONS).is_dir() else []:
        if d.is_dir() and d.name.isdigit():
            out.append((int(d.name), d))
    return sorted(out)


def load_iterate(path: Path, page_dir: Path, pages: dict[Path, str]) -> dict:
    """`pages`: the view page written for each iteration's run and eval folder (folder → page file),
    which the history table links to."""
    history = list(read_rows(path / HISTORY))
    columns = list(HISTORY_COLUMNS) + sorted({k for h in history for k in h} - set(HISTORY_COLUMNS))
    done = {h.get("iteration") for h in history}
    iterations = []
    for n, d in iteration_dirs(path):
        links = {}
        for part in ("run", "eval"):
            page = pages.get(d / part)
            links[part] = href(page, page_dir) if page else None
        model = d / "model"
        iterations.append({"iteration": n, "folder": str(d.relative_to(path)), **links,
                           "model": str(model) if model.is_dir() else None, "finished": n in done})
    return {
        "kind": ITERATE, "title": str(path), "columns": columns,
        "history": [[history_cell(h, c) for c in columns] for h in history],
        "iterations": iterations, "images": images(path, [CURVE]), "report": _text(path / REPORT),
    }


# ---------------------------------------------------------------- files

def images(folder: Path, names: list[str]) -> list[dict]:
    """PNG plots as data: URIs, so the page needs no file beside it."""
    out = []
    for name in names:
        f = folder / name
        if not f.is_file():
            continue
        data = f.read_bytes()
        if not data.startswith(PNG_SIGNATURE):
            out.append({"name": name, "uri": None, "note": "not a PNG file: left out"})
        elif len(data) > MAX_IMAGE_BYTES:
            out.append({"name": name, "uri": None, "note": f"{len(data) >> 20} MiB: too big to embed, left out"})
        else:
            out.append({"name": name, "uri": "data:image/png;base64," + base64.b64encode(data).decode()})
    return out


def _text(f: Path) -> str | None:
    if not f.is_file():
        return None
    return f.read_text(encoding="utf-8", errors="replace")
