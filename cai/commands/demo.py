"""Placeholder: being written."""
import click


@click.command()
def demo() -> None:
    """(being written)"""
