"""`cai view`: one HTML page to read a run, an eval or an iterate folder, no server needed."""

from __future__ import annotations

import click


@click.command()
@click.argument("path", type=click.Path(exists=True, file_okay=False))
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="The page to write [default: PATH/view.html].")
@click.option("--rows", "rows", default="auto", show_default=True, metavar="N|all|SIZE",
              help="Rows a page embeds: at most N, every row (all), or as many as fit SIZE of row data "
                   "(such as 20MB). auto: 30MB, a page that first shows in 1-2 s. Past the limit the page holds "
                   "every flagged or flipped row (up to half of it) and a sample stratified by category, "
                   "principle and verdict; its figures are over every row either way.")
@click.option("--open", "open_", is_flag=True, help="Open the page in the default browser.")
def view(path, out, rows, open_) -> None:
    """Write one self-contained HTML page for PATH: a run folder (chains, verdicts, flags,
    per-principle analytics), an eval folder (A and B side by side, tables, plot) or an iterate
    folder (history, curve, and links to a page for each iteration's run and eval,
    written beside their data).

    The page makes no network requests and holds every script, style and plot inline, so it can
    be mailed or archived with the data. Every text in it is shown as text, never as HTML."""
    from cai.view import build_view
    from cai.view.sample import parse_limit

    written = build_view(path, out, parse_limit(rows))
    for w in written[:-1]:
        click.echo(f"  {w.kind:7s} {w.path} ({_rows(w)}, {_size(w.bytes)})")
    main = written[-1]
    what = f"{main.rows} iterations" if main.kind == "iterate" else _rows(main)
    click.echo(f"view: {main.path} ({main.kind}, {what}, {_size(main.bytes)})")
    if open_:
        import webbrowser

        if not webbrowser.open(main.path.resolve().as_uri()):
            click.echo("  no browser found to open it; open the file by hand", err=True)


def _rows(w) -> str:
    if w.total > w.rows:
        return f"{w.rows} of {w.total} rows: a sample, --rows all for every row"
    return f"{w.rows} rows"


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"
