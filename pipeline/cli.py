"""The `wikihash` command: one click group, thin commands over `pipeline.*`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pipeline import __version__, config
from pipeline.errors import ImageRejected, WikihashError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


def _settings(ctx: click.Context) -> config.Settings:
    """The settings, loaded once per invocation; a bad value is a one-line error."""
    obj = ctx.ensure_object(dict)
    if "settings" not in obj:
        try:
            obj["settings"] = config.load()
        except WikihashError as exc:
            raise click.ClickException(str(exc)) from None
    return obj["settings"]


def database_option(func):
    return click.option(
        "--database-url",
        metavar="URL",
        help="PostgreSQL URL (default: WIKIHASH_DATABASE_URL).",
    )(func)


def _database_url(ctx: click.Context, given: str | None) -> str:
    return given or _settings(ctx).database_url


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="wikihash")
def cli() -> None:
    """Reverse image search over the images of a MediaWiki."""


@cli.command(name="config")
def config_command() -> None:
    """Print the effective settings, secrets masked.

    \b
    Example:
        WIKIHASH_THUMB_WIDTH=330 wikihash config
    """
    settings = _settings(click.get_current_context())
    rows = config.describe(settings)
    width = max(len(env) for env, _, _ in rows)
    for env, value, _help in rows:
        click.echo(f"{env:<{width}}  {value}")


@cli.group()
def db() -> None:
    """Manage the PostgreSQL schema."""


@db.command(name="init")
@database_option
@click.option("--create/--no-create", default=True, show_default=True,
              help="Create the database when it does not exist.")
@click.pass_context
def db_init(ctx: click.Context, database_url: str | None, create: bool) -> None:
    """Apply the numbered migrations in sql/ (idempotent).

    \b
    Example:
        wikihash db init --database-url postgresql://postgres@127.0.0.1/wikihash
    """
    from pipeline import storage

    url = _database_url(ctx, database_url)
    try:
        applied = storage.migrate(url, create=create)
        with storage.connection(url) as conn:
            version = storage.schema_version(conn)
    except WikihashError as exc:
        raise click.ClickException(str(exc)) from None
    for migration in applied:
        click.echo(f"applied {migration.name}")
    click.echo(f"schema version {version}" + ("" if applied else " (up to date)"))


@cli.command(name="hash")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def hash_command(files: tuple[Path, ...], as_json: bool) -> None:
    """Print the canonical dhash of each FILE: hex, signed 64-bit integer, what was done.

    Exits with status 1 when any file could not be hashed; the others are still hashed.

    \b
    Example:
        wikihash hash photo.jpg logo.svg --json
    """
    from pipeline import imaging

    failed = 0
    for path in files:
        record: dict = {"path": str(path), "hex": None, "int64": None, "format": None,
                        "width": None, "height": None, "flattened": None,
                        "low_information": None, "error": None}
        try:
            data = path.read_bytes()
            result = imaging.hash_bytes(data)
        except OSError as exc:
            record["error"] = f"cannot read: {exc.strerror or exc}"
        except ImageRejected as exc:
            record["error"] = f"{type(exc).__name__.lower()}: {exc.reason}"
        else:
            record.update(hex=result.hex, int64=result.int64, format=result.format,
                          width=result.width, height=result.height,
                          flattened=result.flattened, low_information=result.low_information)
        if record["error"]:
            failed += 1
        if as_json:
            click.echo(json.dumps(record))
        elif record["error"]:
            click.echo(f"{path}: error: {record['error']}", err=True)
        else:
            notes = [f"{record['format']} {record['width']}x{record['height']}"]
            notes.append(f"flattened onto {record['flattened']}" if record["flattened"]
                         else "not flattened")
            if record["low_information"]:
                notes.append("low-information")
            click.echo(f"{record['hex']}  {record['int64']:>20}  {path}  ({', '.join(notes)})")
    if failed:
        sys.exit(1)


def main() -> None:
    cli(prog_name="wikihash")
