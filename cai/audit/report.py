"""The audit's files: audit.json (every figure), report.md (for a person) and agreement.png, and the
lines the command prints. Below the judge's calibration floor every figure is shown as "no signal",
with the measured value beside it and the reason, as `cai eval` shows its win rate."""

from __future__ import annotations

import json
from pathlib import Path

from cai.judge.figures import fmt

PLOT = "agreement.png"
LISTED = 8  # pair ids shown per cell; audit.json has them all


def shown(x, signal) -> str:
    return f"no signal ({fmt(x)} measured)" if signal is False else fmt(x)


def _interval(iv, signal) -> str:
    if not iv:
        return "n/a"
    text = f"[{fmt(iv[0])}, {fmt(iv[1])}]"
    return "no signal" if signal is False else text


def _suffix(iv, signal) -> str:
    """An interval after its figure in a printed line; nothing below the floor, where the figure says no signal."""
    return "" if signal is False else " " + _interval(iv, signal)


def _ids(ids: list[str]) -> str:
    return ", ".join(ids[:LISTED]) + (f" (+{len(ids) - LISTED})" if len(ids) > LISTED else "") if ids else "-"


def lines(audit: dict) -> list[str]:
    """The summary `cai constitution audit` prints; its last line says whether the figures carry signal."""
    s = audit["signal"]
    out = [f"{audit['pairs']['n']} labelled pairs, {len(audit['principles'])} comparison questions, each asked alone "
           f"in both orders"]
    for p in audit["principles"]:
        out.append(f"{p['id']:<22} agreement {shown(p['agreement'], s)}{_suffix(p['interval'], s)}, decides "
                   f"{shown(p['decided_share'], s)}, right on decided {shown(p['decided_agreement'], s)}, "
                   f"confidently wrong {len(p['confidently_wrong'])}")
    dups = [c for c in audit["correlations"] if c["duplicate"]]
    for c in dups:
        out.append(f"duplicate? {c['a']} and {c['b']}: r = {shown(c['r'], s)}")
    w = audit["weights"]
    h = w["held_out"]
    out.append(f"held-out agreement ({h['folds']} folds): today's weights {shown(h['today']['agreement'], s)}"
               f"{_suffix(h['today']['interval'], s)}, fitted {shown(h['fitted']['agreement'], s)}"
               f"{_suffix(h['fitted']['interval'], s)}")
    out.append("fitted weights: " + ", ".join(f"{k} {v:g}" for k, v in w["fitted"].items()))
    c = audit.get("candidates") or {}
    if c.get("skipped"):
        out.append(f"candidate principles: not looked for: {c['skipped']}")
    else:
        raising = [t for t in c.get("tested", []) if t["raises"]]
        out.append(f"candidate principles: {len(raising)} of {len(c.get('tested', []))} tested raise held-out "
                   f"agreement (proposed from {c.get('asked', 0)} wrongly judged pairs, scored on the "
                   f"{c.get('scored_on', 0)} others)")
        for t in raising:
            out.append(f"  + {t['question']}  held out {shown(t['held_out_without']['agreement'], s)} → "
                       f"{shown(t['held_out']['agreement'], s)}")
    wr = audit.get("written")
    if wr:
        out.append(f"wrote {wr['path']} ({len(wr['changed'])} weights changed; see `cai constitution diff`)"
                   if wr["written"] else f"--write {wr['path']}: not written: {wr['why']}")
    if s is False:
        out.append("signal: no signal (" + "; ".join(audit["signal_reasons"]) + ")")
    elif s is None:
        out.append("signal: not measured (" + "; ".join(audit["signal_reasons"]) + ")")
    else:
        out.append("signal: yes (the judge's calibration is above the floor)")
    return out


def report_md(audit: dict) -> str:
    s = audit["signal"]
    c = audit["constitution"]
    judge = audit["judge"]
    cal = judge.get("calibration") or {}
    L = [f"# Audit of constitution `{c['name']}` {c['version']}", ""]
    if s is False:
        why = "; ".join(audit["signal_reasons"])
        L += ["**No signal.** " + why[:1].upper() + why[1:] + ". Every figure below is what this judge's verdicts "
              "give, and they are close to chance: each is shown as \"no signal\" with the measured value beside "
              "it. Bring a stronger judge (`--judge-model`, or a served model with `--backend openai`).", ""]
    elif s is None:
        L += ["**Signal not measured.** " + "; ".join(audit["signal_reasons"]) + ".", ""]
    L += [f"Judge `{judge.get('judge_model')}` ({judge.get('mode')}, both orders, tie when |p - 0.5| < "
          f"{judge.get('threshold')}); {audit['pairs']['n']} labelled pairs from `{audit['pairs']['source']}` "
          f"(sha256 {audit['pairs']['sha256'][:12]}). A *principle* here is one of the constitution's `comparisons`, "
          "the questions the judge asks; each was asked alone of every pair. Ties count half."]
    if cal.get("agreement") is not None:
        L += ["", f"Judge calibration: agreement {fmt(cal['agreement'])} on {cal['n']} pairs (`{cal['source']}`), "
              f"floor {fmt(audit['min_agreement'])}."]
    L += ["", "## Per principle", "",
          "| principle | weight | agreement | 95% interval | decides | right on decided | confidently wrong |",
          "|---|---|---|---|---|---|---|"]
    for p in audit["principles"]:
        L.append(f"| {p['id']} | {p['weight']:g} | {shown(p['agreement'], s)} | {_interval(p['interval'], s)} | "
                 f"{shown(p['decided_share'], s)} | {shown(p['decided_agreement'], s)} | {_ids(p['confidently_wrong'])} |")
    L += ["", f"![per-principle agreement]({PLOT})", "", "## Between principles", "",
          "Correlation of the principles' P(a wins) over the pairs, and the share of pairs both decide that they "
          "decide alike. Near 1: one principle written twice.", "",
          "| principles | r | same verdict | |", "|---|---|---|---|"]
    for x in sorted(audit["correlations"], key=lambda x: -(x["r"] if x["r"] is not None else -2)):
        L.append(f"| {x['a']} / {x['b']} | {shown(x['r'], s)} | {shown(x['same'], s)} | "
                 f"{'duplicate?' if x['duplicate'] else ''} |")
    if audit["trade_offs"]:
        L += ["", "Pairs the principles disagree on most (one sure a is better, another sure b is): real trade-offs.",
              "", "| pair | for a | for b | label |", "|---|---|---|---|"]
        for t in audit["trade_offs"]:
            L.append(f"| {t['id']} | {t['for_a']} ({shown(t['p_for_a'], s)}) | {t['for_b']} ({shown(t['p_for_b'], s)}) "
                     f"| {t['label']} |")
    w = audit["weights"]
    h = w["held_out"]
    L += ["", "## Weights from the labels", "",
          "Non-negative weights over the principles' log-odds fitted to the labels (logistic, no intercept, small "
          f"ridge); relative, mean 1, floor {'none (--allow-zero)' if w['allow_zero'] else '0.05'}. A pair's verdict "
          f"is the weighted mean of the log-odds. Held-out: {h['folds']} folds by a hash of the pair id; today's "
          "weights are not fitted, so every pair is held out for them.", "",
          "| principle | today | fitted |", "|---|---|---|"]
    for k, v in w["fitted"].items():
        L.append(f"| {k} | {w['today'][k]:g} | {v:g} |")
    L += ["", "| weights | held-out agreement | 95% interval |", "|---|---|---|",
          f"| today | {shown(h['today']['agreement'], s)} | {_interval(h['today']['interval'], s)} |",
          f"| fitted | {shown(h['fitted']['agreement'], s)} | {_interval(h['fitted']['interval'], s)} |"]
    cands = audit.get("candidates") or {}
    L += ["", "## Where the constitution is silent", ""]
    if cands.get("skipped"):
        L.append(f"Not looked for: {cands['skipped']}.")
    else:
        tested = cands.get("tested", [])
        L.append(f"The judge model was asked for the rule behind {cands.get('asked', 0)} pairs the fitted weights get "
                 f"wrong ({cands.get('unusable', 0)} gave no usable sentence); {len(cands.get('groups', []))} "
                 f"distinct proposals, {len(tested)} tested as principles. Held-out agreement with and without a "
                 f"candidate is scored on the {cands.get('scored_on', 0)} pairs no proposal came from (a candidate "
                 "always fits the pairs it was written for). Never added automatically.")
        raising = [t for t in tested if t["raises"]]
        if raising:
            L += ["", "### Candidate principles", "", "| question | proposed for | alone: agreement | held out "
                  "without → with |", "|---|---|---|---|"]
            for t in raising:
                L.append(f"| {t['question']} | {_ids(t['proposed_for'])} | {shown(t['alone']['agreement'], s)} | "
                         f"{shown(t['held_out_without']['agreement'], s)} → {shown(t['held_out']['agreement'], s)} |")
        others = [t for t in tested if not t["raises"]]
        if others:
            L += ["", "Tested, not raising held-out agreement: " + "; ".join(
                f"\"{t['question']}\" ({shown((t['held_out'] or {}).get('agreement'), s)})" for t in others) + "."]
    L += ["", "## What to do next", ""] + [f"- {x}" for x in next_steps(audit)]
    return "\n".join(L).rstrip() + "\n"


def next_steps(audit: dict) -> list[str]:
    if audit["signal"] is False:
        return ["Bring a stronger judge: these figures are this judge's noise, not your constitution's. "
                "`--judge-model DIR` (a bigger local model) or `--backend openai --base-url URL --judge-model NAME`.",
                "Then run the audit again; --write only writes weights from a judge above the floor."]
    out = []
    for c in audit["correlations"]:
        if c["duplicate"]:
            out.append(f"`{c['a']}` and `{c['b']}` say the same (r = {fmt(c['r'])}): merge them, or remove one.")
    for p in audit["principles"]:
        if p["agreement"] is not None and p["interval"] and p["interval"][1] < 0.5:
            out.append(f"`{p['id']}` disagrees with your labels (agreement {fmt(p['agreement'])}): rewrite or remove it.")
        elif p["confidently_wrong"]:
            out.append(f"`{p['id']}` is confidently wrong on {len(p['confidently_wrong'])} pairs: read them "
                       f"({_ids(p['confidently_wrong'])}).")
    h = audit["weights"]["held_out"]
    if (h["fitted"]["interval"] and h["today"]["agreement"] is not None
            and h["fitted"]["interval"][0] > h["today"]["agreement"]):
        out.append("The fitted weights beat today's past their interval: write them with `--write NEW.yaml` and "
                   "compare with `cai constitution diff`.")
    else:
        out.append("The fitted weights do not clearly beat today's (intervals overlap): more labelled pairs would "
                   "tell them apart.")
    for t in (audit.get("candidates") or {}).get("tested", []):
        if t["raises"]:
            out.append(f"Consider `cai constitution add-comparison FILE --id ID --question \"{t['question']}\"`.")
    return out


def write_plot(audit: dict, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ps = audit["principles"]
    rates = [p["agreement"] or 0.0 for p in ps]
    ivs = [p["interval"] or (r, r) for p, r in zip(ps, rates)]
    errs = [[max(0.0, r - iv[0]) for r, iv in zip(rates, ivs)], [max(0.0, iv[1] - r) for r, iv in zip(rates, ivs)]]
    fig = Figure(figsize=(max(4.5, 0.7 * len(ps) + 2), 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(range(len(ps)), rates, color="#bbbbbb" if audit["signal"] is False else "#4c72b0", yerr=errs, capsize=4)
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_xticks(range(len(ps)), [p["id"] for p in ps], fontsize=7, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("agreement with the labels (ties half)")
    title = f"{audit['constitution']['name']}: per-principle agreement, 95% Wilson intervals"
    ax.set_title(title + (" (no signal)" if audit["signal"] is False else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_outputs(audit: dict, out: Path) -> None:
    (out / "audit.json").write_text(json.dumps(audit, indent=2, ensure_ascii=False) + "\n")
    (out / "report.md").write_text(report_md(audit))
    write_plot(audit, out / PLOT)
