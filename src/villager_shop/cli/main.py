"""The `villager-shop` command line. Each command group lives in its own module."""

from __future__ import annotations

import os
import signal
import sys
import threading
import warnings
from typing import Any

import typer

from villager_shop.cli import (
    backup,
    baseline,
    bench,
    db,
    demo,
    generate,
    legacy,
    migrate,
    rehearse,
    render,
    restore,
    sample,
    serve,
    settings,
    users,
)
from villager_shop.core.errors import after_interrupt, debug_enabled, describe, describe_interrupt

warnings.filterwarnings("ignore", module="platformdirs")

EXAMPLES = """Examples:
  villager-shop demo                      the whole story on a throwaway database, then the API
  villager-shop migrate plan              what the migration would run and lock (read-only)
  villager-shop backup create && villager-shop backup list
  villager-shop db stop                   stop the embedded PostgreSQL and Redis"""

app = typer.Typer(
    name="villager-shop",
    help="Move the villager_shop database to a normalized schema with zero downtime, and serve it.",
    epilog=EXAMPLES,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": render.HELP_OPTION_NAMES},
)

err_console = render.console(stderr=True)


def _register() -> None:
    """Every command group, named here: a module that cannot be imported is an error, never a
    command that silently goes missing."""
    app.add_typer(db.app, name="db")
    app.add_typer(legacy.app, name="legacy")
    app.command("config")(settings.show_config)
    app.command("demo", epilog=demo.EXAMPLES)(demo.demo)
    app.command("generate", epilog=getattr(generate, "EXAMPLES", None))(generate.generate)
    app.add_typer(migrate.app, name="migrate")
    app.add_typer(backup.app, name="backup")
    app.command("restore", epilog=getattr(restore, "EXAMPLES", None))(restore.restore)
    app.command("rehearse", epilog=getattr(rehearse, "EXAMPLES", None))(rehearse.rehearse)
    app.add_typer(baseline.app, name="baseline")
    app.add_typer(users.app, name="users")
    app.command("serve", epilog=getattr(serve, "EXAMPLES", None))(serve.serve)
    app.add_typer(bench.app, name="bench")
    app.add_typer(sample.app, name="sample")


_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, and turn every failure into one line on stderr and an exit code."""
    command = typer.main.get_command(app)
    render.tidy_help(command)
    _notice_interrupts()
    try:
        result = command.main(args=argv, prog_name="villager-shop", standalone_mode=False)
    except SystemExit:
        raise
    except BaseException as exc:
        # An error that follows Ctrl-C (a cleanup on a connection left mid-statement) is the interrupt.
        if not (after_interrupt(exc) or _interrupt_seen.is_set()):
            sys.exit(_report(exc))
        _interrupt_seen.set()
        result = INTERRUPTED
    if result == INTERRUPTED and _interrupt_seen.is_set():
        code = _report_interrupt(sys.argv[1:] if argv is None else argv)
        _exit_now_if_threads_remain(code)
        sys.exit(code)
    sys.exit(result if isinstance(result, int) else 0)


INTERRUPTED = 130  # what typer returns for a KeyboardInterrupt it caught (it says nothing)
_interrupt_seen = threading.Event()


def _notice_interrupts() -> None:
    """Remember that Ctrl-C was pressed, then raise KeyboardInterrupt as Python does: typer turns
    it into a bare exit code, which a command could also return for another reason."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return  # ignored (a background job) or handled by someone else

    def on_sigint(signum: int, frame: Any) -> None:
        _interrupt_seen.set()
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, on_sigint)


def _report_interrupt(args: list[str]) -> int:
    from villager_shop.cli.interrupt import where_stopped

    try:
        where = where_stopped(args)
    except BaseException:  # a second Ctrl-C, or anything else: the plain line
        where = ""
    message, code = describe_interrupt(where)
    err_console.print(message, markup=False)
    return code


def _exit_now_if_threads_remain(code: int) -> None:
    """A worker thread (an index build, a validation, the rehearsal's writer) would keep the
    process alive until its statement ends; an operator who pressed Ctrl-C wants it to stop.
    Ending the process ends its connections, and the server rolls back what they had under way:
    every step of the tool resumes after that as after `kill -9`."""
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _report(exc: BaseException) -> int:
    """Print one line for a failure and return its exit code (typer vendors its own click, so
    its exceptions are recognised by shape rather than by class)."""
    name = type(exc).__name__
    if name == "Exit":
        return int(getattr(exc, "exit_code", 0) or 0)
    if name == "Abort":
        err_console.print("error: aborted")
        return 1
    if name == "NoArgsIsHelpError" and hasattr(exc, "show"):
        exc.show()
        return 0
    if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
        err_console.print(f"error: {exc.format_message()} (see --help)", markup=False)
        return int(exc.exit_code)
    if debug_enabled():
        import traceback

        traceback.print_exc()
    message, code = describe(exc)
    err_console.print(f"error: {message}", markup=False)
    return code
