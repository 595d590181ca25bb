"""`cai constitution ...`: list, show, create, check, edit, compare and audit constitution files.

Every change goes through `cai.constitution.update_file` (or `save_text`, for a whole text from
$EDITOR): it keeps the file's comments, order and quoting, bumps the version, refuses an invalid
result and writes atomically under a lock.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from cai import constitution as cc
from cai.commands.options import chunk_size_option, engine_options
from cai.errors import UsageError
from cai.judge.figures import MIN_AGREEMENT, THRESHOLD
from cai.judge.modes import PAIRWISE_MODES

FIELD_TYPES = {"principles": cc.Principle, "comparisons": cc.Comparison}


@click.group(name="constitution")
def constitution() -> None:
    """Constitutions: the principles for critique/revision and the judge's questions."""


def _console():
    """A rich console when stdout is a terminal; None means plain text (pipes, files, tests)."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else None


def _table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    console = _console()
    if console is not None:
        from rich.table import Table
        from rich.text import Text

        # Text(...) keeps a principle's brackets literal instead of reading them as rich markup.
        table = Table(title=Text(title), title_justify="left", show_lines=any("\n" in c for r in rows for c in r))
        for h in headers:
            table.add_column(h, overflow="fold")
        for row in rows:
            table.add_row(*(Text(c) for c in row))
        console.print(table)
        return
    if title:
        click.echo(title)
    widths = [max(len(h), *(len(r[i].split("\n")[0]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    for row in [headers, *rows]:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


@constitution.command(name="list")
def list_() -> None:
    """Bundled constitutions and those in ./constitutions/ (a local one overrides a bundled one)."""
    rows = []
    for name, path in cc.list_constitutions():
        problems = cc.validate_file(path)
        if problems:
            rows.append([name, "-", "-", "-", f"{path} (invalid: {len(problems)} problems)"])
            continue
        c = cc.load_constitution(path)
        rows.append([name, c.version, str(len(c.principles)), str(len(c.comparisons)), str(path)])
    _table("", ["name", "version", "principles", "comparisons", "file"], rows)


@constitution.command()
@click.argument("name_or_path")
@click.option("--format", "fmt", type=click.Choice(["text", "yaml", "json"]), default="text", show_default=True)
def show(name_or_path: str, fmt: str) -> None:
    """Show a constitution (a bundled name or a path)."""
    c = cc.load_constitution(name_or_path)
    if fmt == "yaml":
        click.echo(Path(c.source).read_text(encoding="utf-8"), nl=False)
        return
    if fmt == "json":
        click.echo(json.dumps(c.model_dump(mode="json"), indent=2, ensure_ascii=False))
        return
    click.echo(f"{c.name} {c.version}  ({c.source}, sha256 {c.sha256()[:12]})")
    click.echo(c.description)
    if c.system_prompt:
        click.echo(f"system prompt: {c.system_prompt}")
    total = sum(p.weight for p in c.principles) or 1.0
    shares = [f"{p.weight:g} ({p.weight / total:.0%})" for p in c.principles]
    click.echo()
    if _console() is not None:
        _table(f"Principles ({len(c.principles)})", ["id", "weight", "tags", "critique → revision"],
               [[p.id, w, ", ".join(p.tags), f"{p.critique}\n→ {p.revision}"] for p, w in zip(c.principles, shares)])
    else:
        click.echo(f"Principles ({len(c.principles)})")
        for p, w in zip(c.principles, shares):
            click.echo(f"- {p.id}  weight {w}" + (f"  [{', '.join(p.tags)}]" if p.tags else ""))
            click.echo(f"    critique: {p.critique}\n    revision: {p.revision}")
    click.echo()
    if any(q.weight != 1.0 for q in c.comparisons):  # weighted (e.g. by `cai constitution audit --write`)
        _table(f"Comparisons ({len(c.comparisons)})", ["id", "weight", "question"],
               [[q.id, f"{q.weight:g}", q.question] for q in c.comparisons])
    else:
        _table(f"Comparisons ({len(c.comparisons)})", ["id", "question"], [[q.id, q.question] for q in c.comparisons])
    click.echo(f"\nFew-shot examples: {len(c.few_shot)}")
    for ex in c.few_shot:
        click.echo(f"  - {ex.prompt}")


@constitution.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--from", "source", metavar="NAME|PATH", default=None, help="Copy this constitution instead.")
def new(path: Path, source: str | None) -> None:
    """Create a constitution file: empty but valid, or a copy of another one."""
    if path.exists():
        raise UsageError(f"{path} already exists")
    if source is None:
        text = cc.new_text(path.stem)
    else:
        original = cc.load_constitution(source)
        editor = cc.Editor(cc.read_text(Path(original.source)))
        editor.set_top("name", path.stem)
        text = editor.text
    # A source the loader accepted may still carry warnings (template syntax, near-duplicates):
    # the copy keeps them, as the user wrote them; only errors would be a bug here.
    _, problems = cc.check_text(text, str(path), strict=False)
    errors = cc.errors_only(problems)
    if errors:
        raise RuntimeError(f"new constitution would be invalid: {errors[0]}")
    cc.create_file(path, text)
    click.echo(f"created {path}" + (f" from {source}" if source else ""))


@constitution.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
def validate(paths: tuple[Path, ...]) -> None:
    """Check files; print every problem as file:line: field: message (exit 2 if any)."""
    bad = 0
    for path in paths:
        problems = cc.validate_file(path)
        for p in problems:
            click.echo(str(p))
        if problems:
            bad += 1
        else:
            c = cc.load_constitution(path)
            click.echo(f"{path}: ok ({len(c.principles)} principles, {len(c.comparisons)} comparisons)")
    if bad:
        raise UsageError(f"{bad} of {len(paths)} file(s) invalid")


def _changed(change: cc.Change, what: str) -> None:
    if change.changed:
        click.echo(f"{what} in {change.path} (version {change.old_version} → {change.new_version})")
    else:
        click.echo(f"no change to {change.path}")


def _free_id(editor: cc.Editor, ident: str) -> None:
    try:
        editor.find(ident)
    except UsageError:
        return
    raise UsageError(f"id {ident!r} is already used in this constitution")


@constitution.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--id", "ident", required=True, help="A short name: letters, digits, '-', '_', '.'.")
@click.option("--critique", required=True, help="The critique request.")
@click.option("--revision", required=True, help="The matching revision request.")
@click.option("--weight", type=float, default=None, help="Relative sampling weight (default 1).")
@click.option("--tag", "tags", multiple=True, help="A tag; repeat for several.")
def add(path: Path, ident: str, critique: str, revision: str, weight: float | None, tags: tuple[str, ...]) -> None:
    """Add a critique/revision principle."""
    item: dict = {"id": ident, "critique": critique, "revision": revision}
    if weight is not None:
        item["weight"] = int(weight) if weight.is_integer() else weight
    if tags:
        item["tags"] = list(tags)

    def change(editor: cc.Editor) -> None:
        _free_id(editor, ident)
        editor.add("principles", item)

    _changed(cc.update_file(path, change), f"added principle {ident!r}")


@constitution.command(name="add-comparison")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--id", "ident", required=True, help="A short name: letters, digits, '-', '_', '.'.")
@click.option("--question", required=True, help="A question for the pairwise judge.")
def add_comparison(path: Path, ident: str, question: str) -> None:
    """Add a comparison question for the judge."""
    def change(editor: cc.Editor) -> None:
        _free_id(editor, ident)
        editor.add("comparisons", {"id": ident, "question": question})

    _changed(cc.update_file(path, change), f"added comparison {ident!r}")


@constitution.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("ident", metavar="ID")
def remove(path: Path, ident: str) -> None:
    """Remove a principle or a comparison (with the comment lines just above it)."""
    removed: list[str] = []
    change = cc.update_file(path, lambda editor: removed.append(editor.remove(ident)))
    _changed(change, f"removed {removed[0][:-1]} {ident!r}")


def _coerce(section: str, field: str, value: str):
    model = FIELD_TYPES[section]
    if field not in model.model_fields:
        raise UsageError(f"{section[:-1]}s have no field {field!r} (fields: {', '.join(model.model_fields)})")
    annotation = model.model_fields[field].annotation
    if annotation is float:
        try:
            number = float(value)
        except ValueError:
            raise UsageError(f"{field} must be a number, not {value!r}") from None
        return int(number) if number.is_integer() and "." not in value else number
    if annotation == list[str]:
        return [t.strip() for t in value.split(",") if t.strip()]
    return value


@constitution.command(name="set", context_settings={"ignore_unknown_options": True})  # VALUE may be "-1"
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("ident", metavar="ID")
@click.argument("field")
@click.argument("value")
def set_(path: Path, ident: str, field: str, value: str) -> None:
    """Set one field of a principle or comparison (tags: comma-separated)."""
    def change(editor: cc.Editor) -> None:
        section, _ = editor.find(ident)
        editor.set(ident, field, _coerce(section, field, value))

    _changed(cc.update_file(path, change), f"set {ident}.{field}")


def _keep_for_recovery(path: Path, text: str) -> Path:
    """Write `text` to the first free PATH.edit-recovery[.N]; created exclusively, so two refused
    edits never write over each other's text."""
    n = 0
    while True:
        candidate = path.with_name(f"{path.name}.edit-recovery" + (f".{n}" if n else ""))
        try:
            with open(candidate, "x", encoding="utf-8") as f:
                f.write(text)
            return candidate
        except FileExistsError:
            n += 1


@constitution.command()
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def edit(path: Path) -> None:
    """Edit in $EDITOR; an invalid result is not saved (your text goes to a recovery file)."""
    original = cc.read_text(path)
    edited = click.edit(original, extension=".yaml", require_save=True)
    if edited is None or edited == original:
        click.echo(f"no change to {path}")
        return
    # The editor may stay open for a long time, so the file is locked only to save.
    try:
        change = cc.save_text(path, original, edited)
    except cc.NotSaved as exc:
        recovery = _keep_for_recovery(path, edited)
        for p in exc.problems:
            click.echo(str(p), err=True)
        raise UsageError(f"{exc}; your text is in {recovery}") from None
    click.echo(f"saved {path} (version {change.old_version} → {change.new_version})")


def _short(value, width: int = 60) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 1] + "…"


@constitution.command()
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
def diff(a: str, b: str) -> None:
    """Principles and comparisons added, removed and changed from A to B (names or paths)."""
    old, new = cc.load_constitution(a), cc.load_constitution(b)
    rows = cc.diff_constitutions(old, new)
    if not rows:
        click.echo("no differences")
        return
    marks = {"added": "+", "removed": "-", "changed": "~"}
    for kind, what, field, before, after in rows:
        line = f"{marks[kind]} {what}"
        if field:
            line += f": {field}: {_short(before)} → {_short(after)}"
        click.echo(click.style(line, fg={"added": "green", "removed": "red"}.get(kind)))


@constitution.command()
@click.argument("name_or_path", metavar="CONSTITUTION")
@click.option("--pairs", required=True, metavar="FILE|RUN_DIR",
              help="Labelled pairs {id, prompt, response_a, response_b, label: a|b} (the --calibration format), or "
                   "a judged run folder together with --labels.")
@click.option("--labels", default=None, metavar="FILE",
              help="With a run folder: rows {id, label: chosen|rejected}, the answer a person prefers per preference id.")
@click.option("--judge-model", "model", default=None, help="Judge model name or folder [default: smollm2-135m].")
@engine_options
@click.option("--mode", type=click.Choice(list(PAIRWISE_MODES)), default=None,
              help="How the judge is asked [default: logprobs, or cot-clamped with --cot].")
@click.option("--cot", is_flag=True, default=None, help="Rationale first, then clamped probabilities (--mode cot-clamped).")
@click.option("--threshold", type=click.FloatRange(0, 0.5, max_open=True), default=None,
              help=f"|p - 0.5| below this is a tie [default: {THRESHOLD}].")
@click.option("--calibration", default=None, metavar="FILE|none",
              help="Labelled pairs the judge is calibrated on first, as `cai judge` does [default: the bundled hard set].")
@click.option("--min-agreement", type=click.FloatRange(0, 1), default=None,
              help=f"Calibration agreement below which every figure is reported as no signal [default: {MIN_AGREEMENT}].")
@click.option("--out", default=None, metavar="DIR", help="Output folder [default: runs/audit-<name>].")
@click.option("--write", default=None, metavar="NEW.yaml",
              help="Write the constitution with the fitted comparison weights to this new file (comments kept).")
@click.option("--allow-zero", is_flag=True, default=None,
              help="Let a fitted weight reach 0 (the question stays in the file, never drawn) [default: floor 0.05].")
@click.option("--folds", type=click.IntRange(2), default=None, help="Cross-validation folds [default: 5].")
@click.option("--propose", type=click.IntRange(0), default=None, metavar="N",
              help="Wrongly judged pairs the judge model is asked for the rule behind [default: 12].")
@click.option("--candidates", type=click.IntRange(0), default=None, metavar="N",
              help="Groups of proposals tested as principles; 0 skips the step [default: 5].")
@click.option("--limit", type=click.IntRange(1), default=None, help="Only the first N labelled pairs.")
@chunk_size_option("Requests in flight at once [default: auto, sized from the judge's engine].")
@click.option("--seed", type=int, default=None)
@click.option("--templates", default=None, help="Folder of Jinja2 templates overriding the bundled ones.")
@click.option("--progress/--no-progress", default=True)
def audit(name_or_path: str, progress: bool, **flags) -> None:
    """Measure each comparison question against labelled pairs; fit weights; find missing principles.

    A principle here is one of the constitution's `comparisons` (the judge's questions). Each is asked
    alone of every pair (both orders); the audit reports its agreement with the labels, the
    correlations between them, non-negative weights fitted to the labels with held-out agreement, and
    candidate questions for the pairs the weighted constitution still gets wrong. Writes OUT/audit.json,
    report.md and agreement.png.
    """
    from cai.audit import AuditConfig, run_audit
    from cai.commands.options import echo_lines
    from cai.config import load_config

    cfg = load_config(AuditConfig, None, {**flags, "constitution": name_or_path})
    from cai.audit.report import lines

    result = run_audit(cfg, progress=progress)
    echo_lines(f"audit: wrote {result['out']}/ (audit.json, report.md, agreement.png)", lines(result))
