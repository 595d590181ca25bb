"""`cai constitution audit`: the judge, labelled pairs and the constitution editor together.

Every figure is read with the judge's own settings, calibrated first as `cai judge` calibrates
(below the floor, every figure is "no signal"). Each comparison question is asked alone of every
pair, in both orders (audit.figures); weights over them are fitted to the labels and checked on
held-out folds (audit.fit); the pairs the fitted weights still get wrong are turned into candidate
questions and tested the same way (audit.candidates); the files are written by audit.report.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from pydantic import Field

from cai.audit import candidates as cand
from cai.audit.figures import Column, correlations, principle_figures, trade_offs
from cai.audit.fit import FOLDS, agreement_marks, combined, features, fit, held_out, relative
from cai.errors import UsageError
from cai.judge.settings import JudgeSettings

NOTE = "# fitted by cai constitution audit"


class AuditConfig(JudgeSettings):
    """The judge (as `cai judge` takes it), what it audits and what the audit writes."""

    pairs: str = Field(description="Labelled pairs {id, prompt, response_a, response_b, label: a|b} (the "
                                   "--calibration format), or a judged run folder with `labels`.")
    labels: str | None = Field(None, description="With a run folder: rows {id, label: chosen|rejected} naming the "
                                                 "answer a person prefers, by preference id.")
    out: str | None = Field(None, description="Output folder [default: runs/audit-<constitution name>].")
    write: str | None = Field(None, description="Write the constitution with the fitted weights to this new file.")
    allow_zero: bool = Field(False, description="Let a fitted weight reach 0 (kept in the file, never drawn).")
    folds: int = Field(FOLDS, ge=2, description="Cross-validation folds, fixed by a hash of each pair's id.")
    propose: int = Field(12, ge=0, description="Wrongly judged pairs the judge model is asked about for a rule.")
    candidates: int = Field(5, ge=0, description="Groups of proposals tested as questions (0: no candidate step).")
    limit: int | None = Field(None, ge=1, description="Only the first N labelled pairs.")


def read_audit_pairs(cfg: AuditConfig) -> list[tuple[dict, list[dict]]]:
    """(row, prompt messages) with a/b labels, from a labelled file or a run folder plus labels."""
    from cai.judge.pairfile import read_labelled_pairs

    path = Path(cfg.pairs)
    if path.is_dir():
        rows = _run_pairs(path, cfg.labels)
    else:
        if cfg.labels:
            raise UsageError("--labels goes with a judged run folder as --pairs; a labelled file carries its labels")
        if not path.is_file():
            raise UsageError(f"--pairs {path}: no such file or run folder")
        rows = read_labelled_pairs(path)
    seen: dict[str, int] = {}
    for n, (row, _) in enumerate(rows, 1):
        ident = str(row["id"])
        if ident in seen:
            raise UsageError(f"{path}: row {n}: id: {ident!r} is used twice (first in row {seen[ident]}); ids name "
                             "pairs in the report and fix the folds")
        seen[ident] = n
    return rows[: cfg.limit] if cfg.limit else rows


def _run_pairs(run: Path, labels: str | None) -> list[tuple[dict, list[dict]]]:
    from cai.textfiles import json_lines

    prefs = run / "preferences.jsonl"
    if not prefs.is_file():
        raise UsageError(f"--pairs {run}: a run folder needs preferences.jsonl (run `cai judge {run}` first)")
    if not labels:
        raise UsageError(f"--pairs {run} is a run folder: give --labels FILE with rows {{id, label: chosen|rejected}}")
    if not Path(labels).is_file():
        raise UsageError(f"--labels {labels}: no such file")
    wanted: dict[str, str] = {}
    for n, row in json_lines(labels, "an object {id, label}"):
        label = {"chosen": "a", "rejected": "b"}.get(row.get("label"))
        if "id" not in row:
            raise UsageError(f"{labels}: line {n}: id: missing")
        if label is None:
            raise UsageError(f"{labels}: line {n}: label: must be \"chosen\" or \"rejected\", not {row.get('label')!r}")
        wanted[str(row["id"])] = label
    out = []
    for _, row in json_lines(prefs):
        if str(row.get("id")) in wanted:
            out.append(({"id": str(row["id"]), "prompt": row["prompt"], "response_a": row["chosen"],
                         "response_b": row["rejected"], "label": wanted[str(row["id"])]}, row["prompt"]))
    missing = sorted(set(wanted) - {r["id"] for r, _ in out})
    if missing:
        raise UsageError(f"{labels}: {len(missing)} labelled ids are not in {prefs} (first: {missing[0]!r})")
    if not out:
        raise UsageError(f"{labels}: no labelled pairs")
    return out


def signal_of(cal: dict | None, min_agreement: float) -> tuple[bool | None, list[str]]:
    """(signal, reasons), worded as `cai eval` words them: False below the floor, None unmeasured."""
    from cai.judge.calibration import floor_figure

    if not cal or cal.get("skipped"):
        return None, ["the judge was not calibrated (--calibration none): whether its verdicts beat chance is not "
                      "measured, so these figures may be noise"]
    figure, name = floor_figure(cal)
    if figure is not None and figure < min_agreement:
        return False, [f"the judge's {name} with known answers was {figure:.3f} on calibration pairs, under the "
                       f"floor of {min_agreement:.2f} (0.5 is chance)"]
    return True, []


def ask_alone(judge, comparisons, items, *, window: int, progress: bool = False) -> list[Column]:
    """Each comparison asked alone of every pair (both orders), in one batched pass."""
    from cai.runloop import map_batched

    judges = [judge.asking(c) for c in comparisons]
    jobs = [(k, item) for k in range(len(judges)) for item in items]

    async def ask(batcher, job):
        k, item = job
        return await judges[k].averdict(batcher, item)

    verdicts = map_batched(judge.backend, ask, jobs, window=window, progress=progress, unit="question",
                           desc="audit")
    n = len(items)
    return [Column(id=c.id, question=c.question, weight=c.weight, p_a=[v.p_a for v in verdicts[k * n:(k + 1) * n]],
                   asked=[v.asked for v in verdicts[k * n:(k + 1) * n]]) for k, c in enumerate(comparisons)]


def run_audit(cfg: AuditConfig, *, backend=None, progress: bool = True,
              log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> dict:
    """Audit, write OUT/audit.json, report.md and agreement.png (and --write's file); return the audit."""
    import numpy as np

    from cai.audit.report import write_outputs
    from cai.constitution import load_constitution
    from cai.judge import PairInput, build_judge
    from cai.judge.calibration import resolve_source
    from cai.judge.pairfile import read_labelled_pairs
    from cai.models import sha256_file
    from cai.pairs import ensure_calibration
    from cai.prompts import Templates

    if not cfg.constitution:
        raise UsageError("give the constitution to audit")
    constitution = load_constitution(cfg.constitution)
    if not constitution.comparisons:
        raise UsageError(f"{constitution.source}: no comparisons to audit (add one with `cai constitution add-comparison`)")
    rows = read_audit_pairs(cfg)
    if cfg.calibration not in (None, "none", "default"):
        read_labelled_pairs(resolve_source(cfg.calibration))
    write_to = Path(cfg.write) if cfg.write else None
    if write_to is not None and write_to.exists():
        raise UsageError(f"--write {write_to} already exists: give a new file (compare with `cai constitution diff`)")
    templates = Templates(cfg.templates)
    templates.source_of(cand.TEMPLATE)  # a missing template fails here, before any engine starts
    out = Path(cfg.out) if cfg.out else Path("runs") / f"audit-{constitution.name}"
    out.mkdir(parents=True, exist_ok=True)
    source = Path(cfg.pairs)
    pairs_sha = sha256_file(source / "preferences.jsonl" if source.is_dir() else source)

    judge = build_judge(cfg, constitution, backend=backend, templates=templates)
    try:
        items = [PairInput(key=str(r["id"]), prompt=p, a=r["response_a"], b=r["response_b"]) for r, p in rows]
        cal = ensure_calibration(judge, cfg.calibration, window=judge.window(cfg.chunk_size, ((it, 1) for it in items)).size,
                                 min_agreement=cfg.min_agreement, old=None, log=log)
        # The audit's requests are one question about one pair (both orders): sized by the longest question.
        longest = max(constitution.comparisons, key=lambda c: len(c.question))
        window = judge.asking(longest).window(cfg.chunk_size, ((it, 1) for it in items)).size
        signal, reasons = signal_of(cal, cfg.min_agreement)
        ids = [str(r["id"]) for r, _ in rows]
        labels = [r["label"] for r, _ in rows]
        cols = ask_alone(judge, constitution.comparisons, items, window=window, progress=progress)
        threshold = judge.threshold
        X = features(cols)
        today = [c.weight for c in constitution.comparisons]
        held = held_out(X, labels, ids, today, threshold, folds=cfg.folds, allow_zero=cfg.allow_zero)
        y = np.array([float(label == "a") for label in labels])
        fitted = relative(fit(X, y), allow_zero=cfg.allow_zero)
        audit: dict = {
            "constitution": {"name": constitution.name, "version": constitution.version, "source": constitution.source,
                             "sha256": constitution.sha256()},
            "pairs": {"source": str(source), "sha256": pairs_sha, "n": len(rows)},
            "judge": {**judge.describe(), "calibration": cal},
            "signal": signal, "signal_reasons": reasons, "min_agreement": cfg.min_agreement,
            "principles": [principle_figures(c, ids, labels, threshold).model_dump(mode="json") for c in cols],
            "correlations": [c.model_dump(mode="json") for c in correlations(cols, threshold)],
            "trade_offs": [t.model_dump(mode="json") for t in trade_offs(cols, ids, labels, threshold)],
            "weights": {
                "today": dict(zip([c.id for c in cols], today)),
                "fitted": dict(zip([c.id for c in cols], fitted)),
                "allow_zero": cfg.allow_zero,
                "held_out": held.model_dump(mode="json"),
                "in_sample": {"today": _share(agreement_marks(X, today, labels, threshold)),
                              "fitted": _share(agreement_marks(X, fitted, labels, threshold))},
            },
        }
        audit["candidates"] = _candidates(cfg, judge, templates, rows, items, cols, X, fitted, held, labels, ids,
                                          signal, window, progress)
    finally:
        close = getattr(judge.backend, "close", None)
        if backend is None and close is not None:
            close()
    audit["written"] = _write(cfg, constitution, audit, pairs_sha, write_to)
    write_outputs(audit, out)
    audit["out"] = str(out)
    return audit


def _share(m) -> float | None:
    return round(sum(m) / len(m), 4) if m else None


def _candidates(cfg, judge, templates, rows, items, cols, X, fitted, held, labels, ids, signal, window,
                progress) -> dict:
    import numpy as np

    from cai.constitution import Comparison

    if cfg.candidates == 0 or cfg.propose == 0:
        return {"skipped": "turned off (--candidates 0 or --propose 0)"}
    if signal is False:
        return {"skipped": "no signal: a judge model at chance proposes noise, so no rule was asked for"}
    p = combined(X, fitted)
    marks = agreement_marks(X, fitted, labels, judge.threshold)
    # The pairs the weighted constitution still gets wrong (or leaves a tie), the most wrong first.
    wrong = [i for i, m in enumerate(marks) if m < 1]
    wrong.sort(key=lambda i: (-abs(p[i] - float(labels[i] == "a")), ids[i]))
    asks = []
    for i in wrong[: cfg.propose]:
        row, prompt = rows[i]
        better, worse = (row["response_a"], row["response_b"]) if labels[i] == "a" else (row["response_b"], row["response_a"])
        asks.append((ids[i], prompt, better, worse))
    if not asks:
        return {"asked": 0, "unusable": 0, "groups": [], "tested": [], "note": "the fitted weights get every pair right"}
    proposals, unusable = cand.propose(judge.backend, templates, asks, window=window, seed=cfg.seed)
    groups = cand.group(proposals)
    known = {c.question.strip().lower() for c in judge.constitution.comparisons}
    groups = [g for g in groups if g.question.strip().lower() not in known]
    tested_groups = groups[: cfg.candidates]
    comps = [Comparison(id=f"candidate-{k + 1}", question=g.question) for k, g in enumerate(tested_groups)]
    tested = []
    # A candidate is scored only on pairs no proposal came from: it was written to fit the pairs it
    # was asked about, so counting them would credit it with its own answers.
    asked = {a[0] for a in asks}
    fresh = [i for i in range(len(ids)) if ids[i] not in asked]
    sub = (lambda seq: [seq[i] for i in fresh])
    if comps:
        new_cols = ask_alone(judge, comps, items, window=window, progress=progress)
        without = held_out(X[fresh], sub(labels), sub(ids), [col.weight for col in cols], judge.threshold,
                           folds=cfg.folds, allow_zero=cfg.allow_zero) if fresh else None
        for g, c in zip(tested_groups, new_cols):
            figures = principle_figures(c, ids, labels, judge.threshold).model_dump(mode="json")
            row = {"question": g.question, "proposed_for": g.pairs, "variants": g.variants, "alone": figures,
                   "scored_on": len(fresh), "held_out": None, "held_out_without": None, "raises": False}
            if without is not None:
                with_it = held_out(np.column_stack([X, features([c])])[fresh], sub(labels), sub(ids),
                                   [*(col.weight for col in cols), 1.0], judge.threshold, folds=cfg.folds,
                                   allow_zero=cfg.allow_zero)
                row.update(held_out=with_it.fitted.model_dump(mode="json"),
                           held_out_without=without.fitted.model_dump(mode="json"),
                           raises=(with_it.fitted.agreement or 0.0) > (without.fitted.agreement or 0.0))
            tested.append(row)
    return {"asked": len(asks), "unusable": unusable, "scored_on": len(fresh),
            "groups": [g.model_dump(mode="json") for g in groups], "tested": tested}


def _write(cfg: AuditConfig, constitution, audit: dict, pairs_sha: str, path: Path | None) -> dict | None:
    """--write: the constitution with the fitted weights, through the comment-keeping editor."""
    if path is None:
        return None
    from cai.constitution import Editor, check_text, create_file, errors_only, read_text
    from cai.judge.figures import fmt

    if audit["signal"] is False:
        return {"path": str(path), "written": False, "why": "no signal: weights fitted to a judge at chance are noise"}
    held = audit["weights"]["held_out"]
    before, after = held["today"]["agreement"], held["fitted"]["agreement"]
    text = read_text(Path(constitution.source))
    changed = []
    for c in constitution.comparisons:
        new = audit["weights"]["fitted"][c.id]
        if new == c.weight:
            continue
        note = (f"{NOTE} on {pairs_sha[:12]}, agreement {fmt(before)} → {fmt(after)} (held out; weight was "
                f"{c.weight:g})")
        text = _set_weight(text, c.id, new, note)
        changed.append({"id": c.id, "old": c.weight, "new": new})
    if changed:
        editor = Editor(text)
        editor.bump()
        text = editor.text
    _, problems = check_text(text, str(path), strict=False)
    if errors_only(problems):
        raise RuntimeError(f"the fitted constitution would be invalid: {errors_only(problems)[0]}")
    create_file(path, text)
    return {"path": str(path), "written": True, "changed": changed}


def _set_weight(text: str, ident: str, weight: float, note: str) -> str:
    """`weight: W` on one comparison, with `note` as the comment line above it (an earlier audit's note
    there is replaced)."""
    from cai.constitution import Editor

    editor = Editor(text)
    editor.set(ident, "weight", int(weight) if float(weight).is_integer() else weight)
    editor = Editor(editor.text)
    section, i = editor.find(ident)
    item = editor.doc[section][i]
    line, col = item.lc.key("weight")
    lines = editor.lines
    if lines[line].lstrip().startswith("-"):
        return editor.text  # `- weight:` opens the entry: a comment line above it would sit outside it
    comment = " " * col + note + editor.nl
    if line > 0 and lines[line - 1].strip().startswith(NOTE):
        lines[line - 1] = comment
    else:
        lines.insert(line, comment)
    return "".join(lines)
