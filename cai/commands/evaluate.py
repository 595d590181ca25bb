"""Placeholder: being written."""
import click


@click.command(name="eval")
def eval_() -> None:
    """(being written)"""
