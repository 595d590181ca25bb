"""`cai view`: one HTML page to read a run, an eval or an iterate folder, no server needed."""

from __future__ import annotations

import click


@click.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="The page to write [default: PATH/view.html].")
@click.option("--open", "open_", is_flag=True, help="Open the page in the default browser.")
def view(path, out, open_) -> None:
    """Write one self-contained HTML page for PATH: a run folder (chains, verdicts, flags,
    per-principle analytics), an eval folder (A and B side by side, tables, plot) or an iterate
    folder (history, curve, and links to a page for each iteration's run and eval,
    written beside their data).

    The page makes no network requests and holds every script, style and plot inline, so it can
    be mailed or archived with the data. Every text in it is shown as text, never as HTML."""
    from cai.view import build_view

    written = build_view(path, out)
    for w in written[:-1]:
        click.echo(f"  {w.kind:7s} {w.path} ({w.rows} rows, {_size(w.bytes)})")
    main = written[-1]
    unit = "iterations" if main.kind == "iterate" else "rows"
    click.echo(f"view: {main.path} ({main.kind}, {main.rows} {unit}, {_size(main.bytes)})")
    if open_:
        import webbrowser

        if not webbrowser.open(main.path.resolve().as_uri()):
            click.echo("  no browser found to open it; open the file by hand", err=True)


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"
