"""Errors the CLI maps to exit codes: UsageError → 2 (bad input or usage), anything else → 1."""


class UsageError(Exception):
    """Bad input from the user: a malformed file, an unknown name, a bad flag combination."""


class Failure(Exception):
    """A run that cannot go on for a reason the user should read plainly (exit 1, no traceback)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (how Slurm and Kubernetes preempt): stops a run the way Ctrl-C does, exit 143."""
