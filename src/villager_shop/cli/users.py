"""`villager-shop users`: passwords and roles of the service's users (stored in villager_service)."""

from __future__ import annotations

import sys

import typer

from villager_shop.core.config import get_settings
from villager_shop.core.db import connection
from villager_shop.core.errors import ConfigError
from villager_shop.embedded import database_url

EXAMPLES = """Examples:
  echo 'a-long-password' | villager-shop users set-password asha@v.in --password-stdin --role shopkeeper
  villager-shop users set-password asha@v.in                 asks for the password twice"""

app = typer.Typer(help="Service users: set passwords and roles.", epilog=EXAMPLES, no_args_is_help=True)


@app.command("set-password")
def set_password(
    login: str = typer.Argument(..., metavar="EMAIL", help="the user's email (or phone)"),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="read the password from stdin"),
    role: str | None = typer.Option(None, "--role", help="also set the role: customer | shopkeeper | admin"),
) -> None:
    """Set a user's password (and role) so they can get a token at POST /api/auth/token."""
    from villager_shop.api.services.accounts import set_password as store

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise ConfigError("empty password")
    with connection(database_url(get_settings()), autocommit=True) as conn:
        user_id = store(conn, login, password, role)
    typer.echo(f"password set for {login} (user {user_id}){f', role {role}' if role else ''}")
