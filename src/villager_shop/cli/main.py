"""The `villager-shop` command line. Each command group lives in its own module."""

from __future__ import annotations

import sys
import warnings

import typer
from rich.console import Console

from villager_shop.core.errors import debug_enabled, describe

warnings.filterwarnings("ignore", module="platformdirs")

app = typer.Typer(
    name="villager-shop",
    help="Move the villager_shop database to a normalized schema with zero downtime, and serve it.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def _register() -> None:
    from villager_shop.cli import db, demo, legacy, settings

    app.add_typer(db.app, name="db")
    app.add_typer(legacy.app, name="legacy")
    app.command("config")(settings.show_config)
    app.command("demo")(demo.demo)
    for module_name, attr, name in _OPTIONAL:
        try:
            module = __import__(f"villager_shop.cli.{module_name}", fromlist=[attr])
        except ModuleNotFoundError:
            continue
        obj = getattr(module, attr)
        if isinstance(obj, typer.Typer):
            app.add_typer(obj, name=name)
        else:
            app.command(name)(obj)


# Command groups owned by later features: registered when their module exists.
_OPTIONAL: list[tuple[str, str, str]] = [
    ("generate", "generate", "generate"),
    ("migrate", "app", "migrate"),
    ("backup", "app", "backup"),
    ("restore", "restore", "restore"),
    ("rehearse", "rehearse", "rehearse"),
    ("baseline", "app", "baseline"),
    ("users", "app", "users"),
    ("serve", "serve", "serve"),
    ("bench", "app", "bench"),
]

_register()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, and turn every failure into one line on stderr and an exit code."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="villager-shop", standalone_mode=False)
    except SystemExit:
        raise
    except BaseException as exc:
        sys.exit(_report(exc))
    sys.exit(result if isinstance(result, int) else 0)


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
