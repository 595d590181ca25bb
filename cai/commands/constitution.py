"""Placeholder: being written."""
import click


@click.group(name="constitution")
def constitution() -> None:
    """(being written)"""
