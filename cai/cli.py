"""The `cai` command line: parses flags into configs and calls the stage functions.

Exit codes: 0 ok, 1 failure, 2 usage or input error (UsageError, click's own usage errors, and
pydantic validation errors of user input).

Output: cai's own lines and progress bars only; CAI_LIBRARY_LOGS=1 brings back every library's
own logging and progress bars (see QUIET_ENV below).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import traceback

import click

from cai.errors import Failure, Terminated, UsageError
from cai.quiet import LIBRARY_LOGS, library_logs


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


# Other libraries' own output. By default the CLI prints cai's own lines and cai's own progress
# bars, and of the libraries under it only their errors: vLLM logs every engine detail at INFO and
# warns about Triton, NUMA binding and deprecations on every start; `datasets` draws a bar for
# every map, save and "Flattening the indices"; transformers one for every model load; torch and
# the rest warn about deprecations. The variables below say so to each library (a value already
# set in the environment is kept, so each can still be set on its own); the engine's processes
# and any subprocess inherit them.
#
#   CAI_LIBRARY_LOGS=1   restores every library's own logging, warnings and progress bars (none of
#                        the variables below is set, no filter is applied).
QUIET_ENV = {
    "VLLM_LOGGING_LEVEL": "ERROR",
    "TORCH_CPP_LOG_LEVEL": "ERROR",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "DATASETS_VERBOSITY": "error",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_VERBOSITY": "error",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    # The last: multiprocessing's resource tracker (its own process) reporting at exit the shared
    # memory vLLM's engine left for it to clean up, which it then does.
    "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning,ignore:resource_tracker:UserWarning",
}
# vLLM's CPU build logs this warning when `vllm.triton_utils` is imported (vllm/triton_utils/
# importing.py: triton is installed without its CPU backend), in the CLI process and again in each
# engine process. It comes before vLLM configures its logging, so VLLM_LOGGING_LEVEL does not reach
# it: Python's last-resort handler prints it bare. A filter on that one logger drops that one
# message (other warnings of the logger still show).
TRITON_LOGGER = "vllm.triton_utils.importing"
TRITON_NOTICE = "Triton is installed, but doesn't include CPU backend"


class _TritonNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return library_logs() or not str(record.msg).startswith(TRITON_NOTICE)


def _quiet_triton_notice() -> None:
    """Installed when cai.cli is imported: that is before any vllm import in the CLI process, and an
    engine process vLLM spawns imports cai.cli again (multiprocessing re-runs the `cai` script as
    __mp_main__) before it imports vllm; a forked one inherits the filter."""
    target = logging.getLogger(TRITON_LOGGER)
    if not any(isinstance(f, _TritonNotice) for f in target.filters):
        target.addFilter(_TritonNotice())


_quiet_triton_notice()


def quiet_libraries() -> None:
    """Set QUIET_ENV (keeping values already set) and the in-process equivalents, unless
    CAI_LIBRARY_LOGS is set. Libraries read most of these variables when they are imported, which
    the commands do later; one already imported (an embedding program, the test suite) is told
    directly."""
    if library_logs():
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    # The Trainer's bar of optimizer steps is a `cai train` stage's own progress, but transformers
    # turns it off (TrainingArguments.disable_tqdm) when its log level is above WARNING: the one
    # logger that decides it stays at WARNING.
    if os.environ.get("TRANSFORMERS_VERBOSITY") == QUIET_ENV["TRANSFORMERS_VERBOSITY"]:
        logging.getLogger("transformers.training_args").setLevel(logging.WARNING)
    import warnings

    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    ours = {k for k, v in QUIET_ENV.items() if os.environ.get(k) == v}
    if "datasets" in sys.modules:
        import datasets

        if "HF_DATASETS_DISABLE_PROGRESS_BARS" in ours:
            datasets.disable_progress_bars()
        if "DATASETS_VERBOSITY" in ours:
            datasets.logging.set_verbosity_error()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        if "HF_HUB_DISABLE_PROGRESS_BARS" in ours:
            hf_logging.disable_progress_bar()
        if "TRANSFORMERS_VERBOSITY" in ours:
            hf_logging.set_verbosity_error()
    if "huggingface_hub" in sys.modules and "HF_HUB_DISABLE_PROGRESS_BARS" in ours:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


@click.group(cls=CaiGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="cai")
def main() -> None:
    """cai: turn a written constitution into aligned models, without human labels."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    quiet_libraries()


def _register() -> None:
    from cai.commands import register

    register(main)


_register()

if __name__ == "__main__":
    sys.exit(main())
