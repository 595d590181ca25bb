"""The `cai` command line: parses flags into configs and calls the stage functions.

Exit codes: 0 ok, 1 failure, 2 usage or input error (UsageError, click's own usage errors, and
pydantic validation errors of user input).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback

import click

from cai.errors import Failure, Terminated, UsageError


class CaiGroup(click.Group):
    """Turns our exceptions into exit codes and one readable line instead of a traceback."""

    def invoke(self, ctx: click.Context):
        previous = _on_sigterm()
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except BrokenPipeError:
            # `cai ... | head`: the reader closing the pipe early is not an error. Point stdout at
            # /dev/null so the interpreter's final flush does not fail again, and leave quietly.
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            except (OSError, ValueError, AttributeError):  # no real file descriptor (e.g. captured)
                pass
            ctx.exit(0)
        except UsageError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(2)
        except Failure as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt as exc:
            what = "Terminated (SIGTERM)" if isinstance(exc, Terminated) else "Interrupted"
            click.echo(f"{what}: finished rows are saved; rerun the same command to resume.", err=True)
            ctx.exit(143 if isinstance(exc, Terminated) else 130)
        except Exception as exc:  # noqa: BLE001 - the CLI boundary
            if os.environ.get("CAI_DEBUG"):
                traceback.print_exc()
            click.echo(f"Error: {type(exc).__name__}: {exc}", err=True)
            click.echo("(set CAI_DEBUG=1 for the traceback)", err=True)
            ctx.exit(1)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


def _raise_terminated(signum, frame):
    raise Terminated()


def _on_sigterm():
    """SIGTERM raises Terminated in the main thread, so a preempted run unwinds as on Ctrl-C: rows
    flushed, the engine shut down, exit 143. Returns the handler to restore (None: left alone)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGTERM)
    if previous not in (signal.SIG_DFL, None):
        return None  # someone else (a test runner, an embedding program) handles it
    signal.signal(signal.SIGTERM, _raise_terminated)
    return previous


@click.group(cls=CaiGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cai")
def main() -> None:
    """cai: turn a written constitution into aligned models, without human labels."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # vLLM logs every engine detail at INFO, and on a CPU warns about Triton, NUMA binding and
    # deprecations on every start; a CLI user wants cai's own progress and summary. Errors still
    # show, and each variable can be set to see more. The engine's processes inherit them.
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning,ignore::DeprecationWarning")
    import warnings

    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)


def _register() -> None:
    from cai.commands import register

    register(main)


_register()

if __name__ == "__main__":
    sys.exit(main())
