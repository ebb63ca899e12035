"""Administration: Django's management commands, and users."""

from __future__ import annotations

from collections.abc import Sequence

import click

from aistack.cli.base import main, prepare


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def manage(args: Sequence[str]) -> None:
    """Run a Django management command (``aistack manage migrate`` and so on)."""
    prepare(embedded=True, process_type="manage")
    from django.core.management import execute_from_command_line

    execute_from_command_line(["aistack manage", *args])


@main.command()
@click.argument("username")
@click.option("--password", default=None, help="Leave out for an API-only user.")
@click.option("--staff", is_flag=True, help="Make the user an administrator.")
def createuser(username: str, password: str | None, staff: bool) -> None:
    """Create a user with a personal workspace and print a new API token."""
    prepare(embedded=True, process_type="createuser", migrate=True)
    from django.core.exceptions import ValidationError

    from aistack.accounts.services import api_token_create, user_create

    try:
        user = user_create(username=username, password=password, is_staff=staff)
    except ValidationError as exc:
        raise click.ClickException("; ".join(exc.messages)) from exc
    _, token = api_token_create(user=user, name="cli")
    click.echo(f"Created user {username!r} with a personal workspace. API token (shown once):",
               err=True)
    click.echo(token)
