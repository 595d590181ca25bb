"""What a folder holds, read into the plain data one page shows.

Three kinds of folder: a run (`cai generate`, then `cai judge`), an eval (`cai eval`) and an
iterate folder (`DIR/history.jsonl`, `DIR/iterations/NN/{run,model,eval}`). Every loader returns a
JSON-ready dict; nothing here formats HTML, and every figure the page shows is computed here.
Rows are read as they are on disk (unknown fields pass through to the page's `meta` view), so a
run made by an older or newer cai still opens.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from urllib.parse import quote

import yaml

from cai.errors import UsageError
from cai.quality import FLAGS, INFORMATIVE, excluding
from cai.records import GENERATIONS, PREFERENCES, RUN_YAML, TIES, read_rows
from cai.view import analytics

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


# ---------------------------------------------------------------- run folders

def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def split_meta(metas: list[dict]) -> tuple[dict, list[dict]]:
    """(the meta every row shares, each row's own remainder): the shared part is stored once, so a
    10,000-row page does not carry 10,000 copies of the sampling settings."""
    if not metas:
        return {}, []
    shared = dict(metas[0])
    for m in metas[1:]:
        for k in [k for k in shared if k not in m or not _same(shared[k], m[k])]:
            del shared[k]
    return shared, [{k: v for k, v in m.items() if k not in shared} for m in metas]


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
    return out


def load_run(path: Path) -> dict:
    info = _yaml(path / RUN_YAML)
    gens = list(read_rows(path / GENERATIONS))
    pairs = list(read_rows(path / PREFERENCES)) + [{**t, "tie": True} for t in read_rows(path / TIES)]
    snapshot = info.get("constitution") or {}
    principles = {p["id"]: {k: p.get(k) for k in ("critique", "revision", "weight", "tags")}
                  for p in snapshot.get("principles") or [] if isinstance(p, dict) and "id" in p}
    questions = {c["id"]: c.get("question") for c in snapshot.get("comparisons") or []
                 if isinstance(c, dict) and "id" in c}

    by_source: dict[str, dict] = {}
    for p in pairs:
        for sid in p.get("source_ids") or []:
            by_source[sid] = p
    shared, own = split_meta([g.get("meta") or {} for g in gens])
    rows = []
    counts = {"rows": len(gens), "pairs": len(pairs), "unjudged": 0, "flagged": 0,
              analytics.DECIDED: 0, analytics.FLIP: 0, analytics.TIE: 0}
    for p in pairs:
        counts[analytics.verdict_label(p)] += 1
    for g, meta in zip(gens, own):
        row = {k: v for k, v in g.items() if k != "meta"}
        rounds = g.get("rounds") or []
        # The final answer is the last revision (or the initial answer): stored only where it is not.
        derived = rounds[-1].get("revision") if rounds else g.get("initial")
        if row.get("final") == derived:
            del row["final"]
        row["meta"] = meta
        pair = by_source.get(g.get("id"))
        row["verdict"] = _verdict(pair, g) if pair else None
        counts["unjudged"] += pair is None
        counts["flagged"] += bool(excluding(g.get("flags") or []))
        rows.append(row)

    stats = analytics.principle_stats(gens, pairs, order=principles)
    qstats = analytics.question_stats(pairs, order=questions)
    header = {k: v for k, v in info.items() if k != "constitution"}
    return {
        "kind": RUN, "title": str(path), "info": header, "constitution": snapshot.get("name"),
        "strategy": (info.get("judge") or {}).get("strategy"), "bad_flags": BAD_FLAGS,
        "principles": principles, "questions": questions, "shared_meta": shared, "rows": rows,
        "counts": counts, "analytics": {"principles": analytics.as_dicts(stats),
                                        "questions": analytics.as_dicts(qstats)},
        "flag_names": sorted({f for g in gens for f in (g.get("flags") or []) + (g.get("initial_flags") or [])}
                             | {f for g in gens for r in g.get("rounds") or [] for f in r.get("flags") or []}),
    }


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


def load_eval(path: Path) -> dict:
    try:
        metrics = json.loads((path / METRICS).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path / METRICS}: not valid JSON ({exc})") from None
    if not isinstance(metrics, dict):
        raise UsageError(f"{path / METRICS}: not a JSON object")
    rows = list(read_rows(path / ANSWERS))
    return {
        "kind": EVAL, "title": str(path), "metrics": metrics, "rows": rows,
        "categories": outcome_counts(rows),
        "compliance": flat_table(metrics.get("compliance")) if isinstance(metrics.get("compliance"), dict) else None,
        "images": images(path, [p.name for p in sorted(path.glob("*.png"))]),
        "report": _text(path / REPORT),
    }


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


def _yaml(f: Path) -> dict:
    if not f.is_file():
        return {}
    try:
        data = yaml.safe_load(f.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UsageError(f"{f}: not readable YAML ({exc})") from None
    return data if isinstance(data, dict) else {}
