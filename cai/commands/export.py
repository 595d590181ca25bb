"""`cai export`: SFT, DPO or KTO data for TRL and `datasets`, with a dataset card."""

from __future__ import annotations

import click

from cai.export import FORMATS


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--format", "fmt", type=click.Choice(list(FORMATS)), required=True,
              help="sft: prompt + revision; dpo: judged pairs; kto: unpaired answers labelled desirable or not.")
@click.option("--to", "to", type=click.Choice(["jsonl", "parquet", "hf"]), default="jsonl", show_default=True)
@click.option("--out", required=True, type=click.Path(), help="File (jsonl, parquet) or folder (hf).")
@click.option("--all-rounds", is_flag=True, help="SFT: one row per revision round, not only the final one.")
@click.option("--keep-flagged", is_flag=True, help="Keep rows whose final (SFT) or chosen (DPO) answer the quality checks flagged.")
@click.option("--filter", "filter_", type=click.Choice(["none", "judged"]), default="none", show_default=True,
              help="SFT: `judged` keeps only rows whose final revision the judge preferred over the initial answer.")
@click.option("--keep-duplicates", is_flag=True,
              help="Keep rows whose chosen text (SFT: the answer) repeats an earlier row's; left out by default.")
@click.option("--min-confidence", type=click.FloatRange(0, 0.5), default=None,
              help="DPO/KTO: keep only pairs with |p_chosen - 0.5| at least this; the card counts the rest.")
@click.option("--decontaminate", multiple=True, type=click.Path(exists=True),
              help="Eval prompt set (any prompt file cai reads; repeatable): rows whose prompt overlaps one of its "
                   "prompts (a shared 13-word run, or most of a short prompt) are left out and listed on the card.")
def export(run_dir, fmt, to, out, all_rounds, keep_flagged, filter_, keep_duplicates, min_confidence,
           decontaminate) -> None:
    """Export a run folder as SFT, DPO or KTO data."""
    from pathlib import Path

    from cai.export import export as do_export

    stats = do_export(run_dir, fmt, to, out, all_rounds=all_rounds, keep_flagged=keep_flagged, filter=filter_,
                      keep_duplicates=keep_duplicates, min_confidence=min_confidence,
                      decontaminate=list(decontaminate) or None)
    click.echo(f"export: {stats['rows']} {fmt} rows -> {stats['path']} (sha256 {stats['sha256'][:16]}…)")
    for line in stats["left_out"].lines():
        click.echo(f"  {line}")
    card = Path(stats["card"])
    if card.name == "README.md":
        click.echo(f"dataset card: {card}")
    else:
        click.echo(f"dataset card: {card} ({card.with_name('README.md')} is not a cai card, left as it is)")
