"""Placeholder: being written."""
import click


@click.group(name="train")
def train() -> None:
    """(being written)"""
