"""The `wikihash` command: one click group, thin commands over `pipeline.*`."""

from __future__ import annotations

import json
import secrets
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import click

from pipeline import __version__, config
from pipeline.errors import ForbiddenURL, ImageRejected, WikihashError

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}


class WikihashGroup(click.Group):
    """The CLI's one error edge: a project error (`WikihashError`) raised by any command,
    its settings or its database check is printed as one `Error:` line with status 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except WikihashError as exc:
            raise click.ClickException(str(exc)) from None


class ResultCount(click.Option):
    """An option counting results, bounded by `pipeline.search.MAX_RESULTS` (the bound the web
    API uses too), read when needed: importing pipeline.search costs 0.2 s of start-up. `{most}`
    in its help is the bound."""

    def get_help_record(self, ctx: click.Context):
        from pipeline.search import MAX_RESULTS

        template = self.help
        self.help = (template or "").replace("{most}", str(MAX_RESULTS))
        try:
            return super().get_help_record(ctx)
        finally:
            self.help = template

    def process_value(self, ctx: click.Context, value):
        value = super().process_value(ctx, value)
        if isinstance(value, int):
            from pipeline.search import MAX_RESULTS

            if value > MAX_RESULTS:
                raise click.BadParameter(f"{value} is more than {MAX_RESULTS}, the most results"
                                         " one search lists", ctx=ctx, param=self)
        return value


def json_option(help: str = "Print one JSON object."):
    """--json, the machine-readable output of a command, as `as_json`."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def _settings(ctx: click.Context) -> config.Settings:
    """The settings, loaded once per invocation; a bad value is a one-line error."""
    obj = ctx.ensure_object(dict)
    if "settings" not in obj:
        obj["settings"] = config.load()
    return obj["settings"]


def database_option(func):
    return click.option(
        "--database-url",
        metavar="URL",
        help="PostgreSQL URL (default: WIKIHASH_DATABASE_URL).",
    )(func)


def _database_url(ctx: click.Context, given: str | None, *, prepared: bool = False) -> str:
    """The database to use; with `prepared`, one that `wikihash db init` has prepared."""
    url = given or _settings(ctx).database_url
    if prepared:
        from pipeline import storage

        storage.require_prepared(url)
    return url


@click.group(cls=WikihashGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, prog_name="wikihash")
@click.option("--env-file", metavar="FILE", type=click.Path(dir_okay=False),
              help="Read settings from this KEY=value file (also: WIKIHASH_ENV_FILE); "
                   "variables set in the environment win.")
def cli(env_file: str | None) -> None:
    """Reverse image search over the images of a MediaWiki."""
    if env_file:
        import os

        from pipeline.envfile import ENV_FILE

        os.environ[ENV_FILE] = os.path.abspath(env_file)  # worker processes read it too


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
    """Apply the numbered migrations shipped in pipeline/migrations/ (idempotent).

    \b
    Example:
        wikihash db init --database-url postgresql://postgres@127.0.0.1/wikihash
    """
    from pipeline import storage

    url = _database_url(ctx, database_url)
    applied = storage.migrate(url, create=create)
    with storage.connection(url) as conn:
        version = storage.schema_version(conn)
    for migration in applied:
        click.echo(f"applied {migration.name}")
    click.echo(f"schema version {version}" + ("" if applied else " (up to date)"))


@cli.command(name="hash")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@json_option("One JSON object per line.")
def hash_command(files: tuple[Path, ...], as_json: bool) -> None:
    """Print the canonical dhash of each FILE: hex, signed 64-bit integer, what was done.

    Exits with status 1 when any file could not be hashed; the others are still hashed.

    \b
    Example:
        wikihash hash photo.jpg logo.svg --json
    """
    from pipeline import imaging, localfile, sandbox

    failed = 0
    for path in files:
        record: dict = {"path": str(path), "hex": None, "int64": None, "format": None,
                        "width": None, "height": None, "flattened": None,
                        "low_information": None, "error": None}
        try:
            data = localfile.read_bounded(path, imaging.MAX_INPUT_BYTES)
            result = sandbox.hash_bytes(data)
        except (localfile.NotAFile, sandbox.Busy) as exc:
            record["error"] = str(exc)
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


workers_option = click.option(
    "--workers", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
    help="Run N worker processes of this command's own until it ends (for cron: nothing else "
         "needs to run); 0: workers must be running (`wikihash worker`).")


@cli.command()
@database_option
@click.option("--limit", type=click.IntRange(min=1), help="Crawl only the first N articles.")
@click.option("--restart", is_flag=True, help="Walk again from the first article.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="After the walk, keep re-sending lost work until nothing is pending.")
@click.option("--job-size", type=click.IntRange(1, 500), default=100, show_default=True,
              help="Files per fetch task.")
@click.option("--from-dumps", "from_dumps", metavar="SOURCE",
              help="Take articles and image links from a dump run instead of walking the API:"
                   " a directory, a run URL (…/enwiki/20261201/) or 'latest'.")
@click.option("--replace", is_flag=True,
              help="With --from-dumps: replace the crawl the ledger already holds.")
@workers_option
@click.pass_context
def crawl(ctx: click.Context, database_url: str | None, limit: int | None, restart: bool,
          wait: bool, job_size: int, from_dumps: str | None, replace: bool,
          workers: int) -> None:
    """Walk the wiki's articles into the ledger and queue their files for the workers.

    Resumes from its checkpoint when stopped; a completed crawl is not walked again
    (use --restart, or `wikihash recrawl` for changes). Workers must be running
    (`wikihash worker`), or give --workers N; with none it stops and says so.

    \b
    Example:
        WIKIHASH_USER_AGENT='mybot/1.0 (me@example.org)' wikihash crawl --limit 100
        wikihash crawl --from-dumps latest
    """
    from pipeline import ownworkers
    from pipeline.runtime import build_producer

    if from_dumps and (limit or restart):
        raise click.UsageError("--limit and --restart are for the walk, not --from-dumps")
    if replace and not from_dumps:
        raise click.UsageError("--replace goes with --from-dumps")
    settings = _settings(ctx)
    producer = build_producer(settings, _database_url(ctx, database_url, prepared=True),
                              job_size=job_size)
    _on_sigterm(producer.request_stop)
    ctx.with_resource(ownworkers.running(workers if wait else 0))  # stopped at the end
    try:
        if from_dumps:
            _crawl_from_dumps(settings, producer, from_dumps, replace)
            if wait:
                _drain(producer)
            return
        done = producer.walk(limit=limit, restart=restart)
        stats = producer.stats
        api = producer.wiki.stats
        click.echo(f"walked {stats.articles} articles, {stats.new_files} new files, "
                   f"{api.requests} API requests, waited {api.waited:.1f} s for the API"
                   + ("; the walk is complete" if done else ""))
        if wait and not producer.stopping:
            _drain(producer)
        if producer.stopping:
            click.echo("stopped at a checkpoint; `wikihash crawl` resumes from it")
    finally:
        producer.close()


@cli.command()
@click.option("-Q", "--queues", default="fetch,hash,write", show_default=True,
              help="Comma-separated queues to consume.")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), help="Worker processes.")
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--pool", default="prefork", show_default=True,
              type=click.Choice(["prefork", "solo", "threads"]))
@click.option("-n", "--hostname",
              help="Node name, e.g. worker1@%h [default: worker-RANDOM@%h, unique].")
@click.option("--max-memory", type=click.IntRange(min=64), default=3072, show_default=True,
              metavar="MIB", help="Address space of each worker process, MiB: an image that "
              "needs more is recorded as too large ")
def worker(queues: str, concurrency: int | None, loglevel: str, pool: str,
           hostname: str | None, max_memory: int) -> None:
    """Run a Celery worker on the project's queues.

    \b
    Example:
        wikihash worker -Q hash -c 4
    """
    from pipeline import celeryapp

    unknown = set(queues.split(",")) - set(celeryapp.QUEUES)
    if unknown:
        raise click.BadParameter(f"unknown queue {', '.join(sorted(unknown))}; "
                                 f"known: {', '.join(celeryapp.QUEUES)}", param_hint="--queues")
    app = celeryapp.create_app(_settings(click.get_current_context()), worker=True)
    app.conf.worker_child_address_space = max_memory * 1024 * 1024  # workers/base.py
    argv = ["worker", "-Q", queues, "--loglevel", loglevel, "--pool", pool, "-E"]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    # Celery's default node name, celery@HOST, is the same for every worker of a machine, and
    # for every container on host networking: Flower would show one. A random suffix makes
    # each worker its own node.
    argv += ["--hostname", hostname or f"worker-{secrets.token_hex(3)}@%h"]
    app.worker_main(argv)


@cli.command()
@click.option("--address", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=5555, show_default=True)
@click.pass_context
def flower(ctx: click.Context, address: str, port: int) -> None:
    """Run Flower (task throughput per queue) with basic auth from WIKIHASH_FLOWER_AUTH.

    \b
    Example:
        WIKIHASH_FLOWER_AUTH=admin:long-secret wikihash flower --port 5555
    """
    auth = _settings(ctx).flower_auth
    if not config.credentials_ok(auth):
        raise click.ClickException("set WIKIHASH_FLOWER_AUTH=user:password; "
                                   "Flower never runs without authentication")
    from pipeline import celeryapp

    app = celeryapp.create_app(_settings(ctx))
    app.start(["flower", f"--address={address}", f"--port={port}", f"--basic-auth={auth}"])


@cli.command()
@database_option
@click.option("--since", metavar="TIMESTAMP",
              help="Apply changes from this time (YYYY-MM-DDTHH:MM:SSZ) instead of the last crawl.")
@click.option("--dry-run", is_flag=True, help="Print what would change; change nothing.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Afterwards, wait until the changed files are hashed.")
@click.option("--every", type=click.FloatRange(min=60), metavar="SECONDS",
              help="Run again and again, this many seconds apart (for a scheduled service); "
                   "first wait for a complete crawl.")
@workers_option
@click.pass_context
def recrawl(ctx: click.Context, database_url: str | None, since: str | None, dry_run: bool,
            wait: bool, every: float | None, workers: int) -> None:
    """Bring the index up to date with what changed on the wiki since the last crawl.

    Reads the wiki's change feed (and each shared repository's upload and deletion log); when
    the last crawl is older than the feed reaches, walks revision ids instead. Resumes where it
    stopped when killed.

    \b
    Example:
        wikihash recrawl --dry-run
        wikihash recrawl --since 2026-11-01T00:00:00Z
        wikihash recrawl --every 86400
        wikihash --env-file /etc/wikihash.env recrawl --workers 2    # from cron
    """
    from pipeline import ownworkers
    from pipeline import recrawl as recrawling

    ctx.with_resource(ownworkers.running(0 if dry_run or not wait else workers))
    if every is None:
        _recrawl_once(ctx, database_url, since, dry_run, wait)
        return
    # A service: it waits for the first crawl, and SIGTERM ends it with status 0 (a round in
    # progress stops waiting for its hashes; the re-crawl resumes where it stopped).
    stopping = threading.Event()
    _on_sigterm(stopping.set)
    say = lambda line: click.echo(line, err=True)  # noqa: E731
    url = _database_url(ctx, database_url)
    if since is None and not recrawling.wait_for_first_crawl(url, stopping, say):
        return
    while not stopping.is_set():
        _recrawl_once(ctx, database_url, since, dry_run, wait, stopping)
        since = None  # later rounds go on from where the previous one ended
        stopping.wait(every)


def _on_sigterm(stop: Callable[[], None]) -> None:
    """On SIGTERM (`docker compose stop`), call `stop` to end at the next checkpoint; a
    second SIGTERM ends the process at once."""
    import signal

    def handler(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        click.echo("SIGTERM: stopping at the next checkpoint", err=True)
        stop()

    signal.signal(signal.SIGTERM, handler)


def _recrawl_once(ctx: click.Context, database_url: str | None, since: str | None,
                  dry_run: bool, wait: bool, stopping: threading.Event | None = None) -> None:
    from pipeline.runtime import build_producer, build_recrawler

    settings = _settings(ctx)
    producer = build_producer(settings, _database_url(ctx, database_url, prepared=True))
    if stopping is not None:
        _on_sigterm(lambda: (stopping.set(), producer.request_stop()))
    try:
        recrawler = build_recrawler(settings, producer.wiki, producer.conn)
        report = recrawler.run(since=since, dry_run=dry_run)
        click.echo(("would apply " if dry_run else "applied ") + report.summary())
        if dry_run:
            for label, titles in (("article added", report.pages_added),
                                  ("article changed", report.pages_updated),
                                  ("article removed", report.pages_removed),
                                  ("file changed", report.files_changed)):
                for title in titles:
                    click.echo(f"  {label}: {title}")
            return
        producer.dispatch()
        if wait:
            _drain(producer)
    finally:
        producer.close()


@cli.command()
@database_option
@click.option("--width", type=click.Choice([str(w) for w in config.STANDARD_WIDTHS]),
              required=True, help="The stored thumbnail width to re-hash at.")
@click.option("--limit", type=click.IntRange(min=1), help="Stop after this many files.")
@click.pass_context
def rehash(ctx: click.Context, database_url: str | None, width: str, limit: int | None) -> None:
    """Re-hash the ledger's files from thumbnails WIDTH px wide, as politely as a crawl.

    Each file keeps its old hash until its new one is committed (and if the new download
    fails). Resumes where it stopped; run it again to retry the files it kept.

    \b
    Example:
        wikihash rehash --width 250
    """
    import functools

    import redis

    from pipeline import fetch, politeness, storage
    from pipeline import rehash as rehashing
    from pipeline.runtime import build_wiki

    settings = _settings(ctx)
    client = redis.Redis.from_url(settings.broker_url)
    get = functools.partial(
        fetch.download, fetch.new_session(settings.user_agent),
        max_bytes=settings.max_bytes, timeout=settings.fetch_timeout,
        slots=politeness.DownloadSlots(client, settings.max_downloads),
        bandwidth=politeness.Bandwidth(client, settings.max_mbits * 1_000_000 / 8))

    def download(info) -> tuple[bytes, str]:
        hosts = {fetch.host_of(u) for u in (info.url, info.thumb_url) if u}
        if info.thumb_url:
            return get(info.thumb_url, allowed_hosts=hosts).data, "thumb"
        return get(info.url, allowed_hosts=hosts).data, "original"

    conn = storage.connect(_database_url(ctx, database_url))
    try:
        report = rehashing.rehash(conn, build_wiki(settings), int(width), download,
                                  limit=limit)
    finally:
        conn.close()
    click.echo(f"re-hashed {report.rehashed} files at {width} px; kept the old hash of"
               f" {report.kept}; {report.left} left")


class DumpsRefused(click.ClickException):
    """Bad dump input or a ledger that holds another crawl: trying again will not help."""

    exit_code = 3  # ops/up does not restart the producer on this status


def _crawl_from_dumps(settings: config.Settings, producer, spec: str, replace: bool) -> None:
    from pipeline.dumps.bootstrap import crawl_from_dumps
    from pipeline.errors import DumpError

    try:
        report = crawl_from_dumps(
            producer, spec, user_agent=settings.user_agent, dumps_url=settings.dumps_url,
            dumps_dir=Path(settings.dumps_dir), replace=replace,
            say=lambda line: click.echo(line, err=True))
    except DumpError as exc:
        raise DumpsRefused(str(exc)) from None
    api = producer.wiki.stats
    click.echo(f"{report.summary()}; {api.requests} API requests")


def _drain(producer) -> None:
    """Wait until nothing is pending, re-sending lost work, with progress on stderr; stop
    with the command to run when no worker consumes the queues (pipeline.consumers)."""
    from pipeline import celeryapp, consumers

    settings = _settings(click.get_current_context())
    app = celeryapp.create_app(settings)

    setting = next(s for s in config.SETTINGS if s.name == "broker_url")
    watch = consumers.Watch(lambda: consumers.consumed_queues(app),
                            config.mask(setting, settings.broker_url),
                            say=lambda line: click.echo(line, err=True))

    from pipeline import progress as progressing

    tracker, shown = progressing.Tracker(), progressing.display(sys.stderr)

    def progress(counts: dict) -> None:
        shown.show(tracker.update(counts, walk_done=True))
        watch(counts)

    try:
        drained = producer.drain(progress=progress)
    finally:
        shown.finish()
    if drained:
        click.echo("nothing pending")


def _status_line(counts: dict) -> str:
    rate = counts["last_minute"] / 60.0
    eta = ""
    if counts["pending"] and rate > 0:
        seconds = int(counts["pending"] / rate)
        eta = f", ETA {seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s"
    return (f"articles {counts['articles']}  files {counts['files']}: "
            f"hashed {counts['hashed']}, pending {counts['pending']}, "
            f"failed {counts['failed']}, missing {counts['missing']}, "
            f"unsupported {counts['unsupported']}  ({rate:.1f} files/s{eta})")


@cli.command()
@database_option
@click.option("--watch", is_flag=True,
              help="Follow the crawl until it is complete: one line redrawn on a terminal, "
                   "a line per meaningful change elsewhere.")
@json_option("Print the counts as JSON.")
@click.pass_context
def status(ctx: click.Context, database_url: str | None, watch: bool, as_json: bool) -> None:
    """Crawl progress: articles walked, files by state; with --watch, rate and ETA of this crawl.

    \b
    Example:
        wikihash status --watch
    """
    import time

    from pipeline import ledger, storage

    url = _database_url(ctx, database_url, prepared=True)

    def read() -> dict:
        with storage.connection(url) as conn:
            counts = ledger.counts(conn)
            counts["walk"] = ledger.get_state(conn, "walk")
            counts["last_crawl"] = ledger.get_state(conn, "last_crawl")
            return counts

    if not watch:
        counts = read()
        if as_json:
            click.echo(json.dumps(counts))
        else:
            walk = counts["walk"] or {}
            click.echo("walk: " + ("complete" if walk.get("done") else
                                   "in progress" if walk else "not started"))
            click.echo(_status_line(counts))
        return
    from pipeline import progress

    tracker, shown = progress.Tracker(), progress.display(sys.stdout)
    try:
        while True:
            counts = read()
            snap = tracker.update(counts, walk_done=bool((counts["walk"] or {}).get("done")))
            shown.show(snap)
            if snap.complete:
                return
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        shown.finish()


@cli.command()
@database_option
@click.option("--state", type=click.Choice(["failed", "missing", "unsupported", "pending"]),
              default="failed", show_default=True, help="Which files to list.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@json_option()
@click.pass_context
def files(ctx: click.Context, database_url: str | None, state: str, limit: int,
          as_json: bool) -> None:
    """List the files in a state, with the reason, the attempts and the articles using them.

    \b
    Example:
        wikihash files --state failed
        wikihash files --state missing --json
    """
    from pipeline import retry, storage

    url = _database_url(ctx, database_url, prepared=True)
    with storage.connection(url) as conn:
        total, rows = retry.listing(conn, state, limit=limit)
    if as_json:
        click.echo(json.dumps({"state": state, "total": total, "files": rows}))
        return
    shown = f", the first {len(rows)} by title" if len(rows) < total else ""
    click.echo(f"{total} file{'' if total == 1 else 's'} {state}{shown}")
    for row in rows:
        tries = f"{row['attempts']} attempt{'' if row['attempts'] == 1 else 's'}"
        used = f"{row['articles']} article{'' if row['articles'] == 1 else 's'}"
        click.echo(f"  {row['title']}: {row['reason'] or 'no reason recorded'} ({tries}, {used})")
    if state == "failed" and total:
        click.echo("try them again with: wikihash retry --failed")


@cli.command(name="retry")
@database_option
@click.option("--failed", "failed", is_flag=True, required=True,
              help="Try the failed files again (required: says what is retried).")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait until they are settled again.")
@workers_option
@click.pass_context
def retry_command(ctx: click.Context, database_url: str | None, failed: bool, wait: bool,
                  workers: int) -> None:
    """Send the failed files to the workers again (a file whose API lookup failed is looked
    up again first).

    \b
    Example:
        wikihash retry --failed --workers 2
    """
    from pipeline import ownworkers, retry, storage
    from pipeline.runtime import build_producer

    settings = _settings(ctx)
    producer = build_producer(settings, _database_url(ctx, database_url, prepared=True))
    ctx.with_resource(ownworkers.running(workers if wait else 0))
    try:
        with storage.transaction(producer.conn):
            reset = retry.reset_failed(producer.conn)
        looked = retry.look_up_failed(
            producer.conn, lambda titles: producer.wiki.file_info(titles, settings.thumb_width))
        still = f", {looked.failed} of them still failed" if looked.failed else ""
        click.echo(f"{reset + looked.pending} failed files to try again "
                   f"({looked.titles} looked up on the wiki again{still})")
        producer.dispatch()
        if wait:
            _drain(producer)
    finally:
        producer.close()


# -- search, serve, export (issue 7) ------------------------------------------------------------


allow_host_option = click.option(
    "--allow-host", "allow_hosts", multiple=True, metavar="HOST:PORT",
    help="Let URLs reach this host:port even if it is a private or loopback address (repeatable).")


@cli.command()
@click.argument("image")
@database_option
@click.option("--max-distance", type=click.IntRange(0, 16), default=None,
              help="Largest Hamming distance in bits, at most 16 (search.MAX_USEFUL_DISTANCE)"
              " [default: 8, measured in docs/search.md].")
@click.option("--nearest", cls=ResultCount, type=click.IntRange(min=1), metavar="K",
              help="List the K (1..{most}) nearest files instead of those within "
                   "--max-distance.")
@click.option("--plain", is_flag=True, help="Probe the canonical hash only (no query variants).")
@allow_host_option
@json_option("Print the result as one JSON object.")
@click.pass_context
def search(ctx: click.Context, image: str, database_url: str | None, max_distance: int | None,
           nearest: int | None, plain: bool, allow_hosts: tuple[str, ...],
           as_json: bool) -> None:
    """Find the files near IMAGE (a file or an http(s) URL) and the articles that use them.

    The query is hashed as the crawl hashes files, plus variants (mirrored, border trimmed,
    slightly uncropped); matches are sorted by distance in bits, then the query's own hash
    before its variants, then the file of the query's shape; exact duplicates (same SHA-1, or
    same hash and pixel size) are one match listing all their articles.

    \b
    Example:
        wikihash search photo.jpg
        wikihash search https://example.org/picture.png --nearest 5 --json
    """
    from pipeline import safeurl, sandbox, storage
    from pipeline import search as searching

    settings = _settings(ctx)
    distance = searching.DEFAULT_MAX_DISTANCE if max_distance is None else max_distance

    try:
        data = searching.query_bytes(image, max_bytes=settings.max_bytes,
                                     timeout=settings.fetch_timeout,
                                     allow_hosts=safeurl.normalise_allow(allow_hosts))
    except ForbiddenURL as exc:
        hint = ""
        if "address" in str(exc):
            host = urlsplit(image).netloc.rsplit("@", 1)[-1]
            hint = f"; to search a server of your own there, add --allow-host {host}"
        raise click.ClickException(f"{exc}{hint}") from None
    canonical, probes = sandbox.query_variants(
        data, ("original",) if plain else searching.variants.DEFAULT_VARIANTS)
    with storage.connection(_database_url(ctx, database_url, prepared=True)) as conn:
        result = searching.search_hashes(conn, canonical.int64, probes,
                                         max_distance=distance, nearest=nearest)
    if as_json:
        click.echo(json.dumps(result.to_dict()))
        return
    click.echo(f"query {result.hash}: " + searching.describe_count(len(result.matches), nearest,
                                                                   distance))
    if result.note:
        click.echo(f"note: {result.note}")
    for match in result.matches:
        how = "" if match.variant == "original" else f"  (as {match.variant})"
        if match.distance > searching.DEFAULT_MAX_DISTANCE:
            how += f"  (not similar: {match.distance} bits apart)"
        click.echo(f"{match.distance:>3}  {match.title}{how}")
        if match.duplicates:  # exact duplicates, one result (pipeline.search.group)
            click.echo("       also uploaded as: " + ", ".join(d.title for d in match.duplicates))
        for article in match.articles:
            click.echo(f"       {article.title}  {article.url}")
        if not match.articles:
            click.echo("       (no article uses it)")


@cli.command()
@database_option
@click.option("--address", default="127.0.0.1", show_default=True,
              help="Address to listen on; beyond loopback it needs WIKIHASH_SERVE_AUTH.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--max-upload", type=click.IntRange(min=1), default=20 * 1024 * 1024,
              show_default=True, help="Largest request body in bytes.")
@allow_host_option
@click.option("--server-name", "server_names", multiple=True, metavar="NAME",
              help="A host name clients use to reach this server (repeatable); requests with"
              " another Host header are refused. Loopback names and --address always count.")
@click.pass_context
def serve(ctx: click.Context, database_url: str | None, address: str, port: int,
          max_upload: int, allow_hosts: tuple[str, ...], server_names: tuple[str, ...]) -> None:
    """Serve the search page and its JSON API (POST /api/search, GET /api/stats).

    \b
    Example:
        wikihash serve --port 8000
    """
    from pipeline import safeurl, web

    settings = _settings(ctx)
    if not web.is_loopback(address) and not config.credentials_ok(settings.serve_auth):
        raise click.ClickException(
            f"{address} is reachable beyond this machine: set WIKIHASH_SERVE_AUTH=user:password")
    app = web.create_app(web.WebSettings(
        database_url=_database_url(ctx, database_url), max_fetch_bytes=settings.max_bytes,
        fetch_timeout=settings.fetch_timeout, max_upload_bytes=max_upload,
        allow_hosts=safeurl.normalise_allow(allow_hosts), auth=settings.serve_auth,
        served_names=web.LOOPBACK_NAMES | {address, *server_names}))
    click.echo(f"wikihash: serving http://{address}:{port}/", err=True)
    web.serve(app, address, port)


@cli.command()
@database_option
@click.option("--max-distance", type=click.IntRange(0, 8), default=4, show_default=True,
              help="Link two files whose hashes differ in at most this many bits (at most 8).")
@click.option("--min-size", type=click.IntRange(min=2), default=2, show_default=True,
              help="List clusters of at least this many files.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per cluster, per line.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV, one row per file.")
@click.option("--refresh", is_flag=True,
              help="Compute and store the clusters for the web page; print one summary line.")
@click.pass_context
def duplicates(ctx: click.Context, database_url: str | None, max_distance: int, min_size: int,
               as_json: bool, as_csv: bool, refresh: bool) -> None:
    """Clusters of near-duplicate files: hashes within --max-distance bits, linked transitively.

    Low-information hashes (flat images, stripes) are left out. Largest clusters first, each
    file with its repository, size, SHA-1 and up to 20 of the articles using it. Every run
    also stores all the clusters at that distance in the ledger, replacing the previous ones,
    for `wikihash serve` (GET /api/duplicates) to show; --refresh only does that, e.g. after a
    crawl or from cron.

    \b
    Example:
        wikihash duplicates --max-distance 3 --min-size 3 --csv > clusters.csv
        wikihash duplicates --refresh
    """
    from pipeline import duplicates as dups
    from pipeline import storage

    if sum((as_json, as_csv, refresh)) > 1:
        raise click.UsageError("give one of --json, --csv and --refresh")
    try:
        with storage.connection(_database_url(ctx, database_url)) as conn:
            result = dups.find_clusters(conn, max_distance=max_distance)
            dups.store(conn, result)
        if refresh:
            click.echo(f"{len(result.sizes):,} clusters within {max_distance} bits,"
                       f" {int(result.sizes.sum()):,} of {result.files:,} files,"
                       f" stored in {sum(result.seconds.values()):.1f} s")
            return
        with storage.connection(_database_url(ctx, database_url)) as conn:
            _print_clusters(dups.described(conn, result, min_size), as_json, as_csv,
                            sum(1 for s in result.sizes.tolist() if s >= min_size),
                            max_distance, min_size)
    except WikihashError as exc:
        raise click.ClickException(str(exc)) from None


def _print_clusters(clusters, as_json: bool, as_csv: bool, count: int, max_distance: int,
                    min_size: int) -> None:
    """`wikihash duplicates`' output, cluster after cluster as they are described."""
    if as_json:
        for cluster in clusters:
            click.echo(json.dumps(cluster.to_dict()))
        return
    if as_csv:
        import csv

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["cluster", "size", "file_id", "title", "repo", "bytes", "sha1", "hash",
                         "article_count", "articles"])
        for cluster in clusters:
            for f in cluster.files:
                writer.writerow([cluster.rank, cluster.size, f.file_id, f.title, f.repo, f.size,
                                 f.sha1, f.hash, f.article_count, "|".join(f.articles)])
        return
    click.echo(f"{count} clusters within {max_distance} bits of at least {min_size} files")
    for cluster in clusters:
        click.echo(f"cluster {cluster.rank}: {cluster.size} files")
        for f in cluster.files:
            click.echo(f"  {f.hash}  {f.title}  {f.repo or '-'}  {f.size or 0:,} bytes"
                       f"  sha1 {f.sha1 or '-'}")
            more = f.article_count - len(f.articles)
            for title in f.articles:
                click.echo(f"      {title}")
            if more:
                click.echo(f"      ... and {more} more articles")


@cli.command()
@database_option
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Directory to write into (created if needed).")
@click.pass_context
def export(ctx: click.Context, database_url: str | None, out: Path) -> None:
    """Write wikihash.dump (pg_dump -Fc), hashes.sql (the tutorial's table), SHA256SUMS and
    manifest.json into OUT.

    \b
    Example:
        wikihash export --out /srv/dumps/2026-11-27
        cd /srv/dumps/2026-11-27 && sha256sum -c SHA256SUMS
    """
    from pipeline import export as exporting

    result = exporting.export(_database_url(ctx, database_url), out,
                              progress=lambda line: click.echo(line, err=True))
    for name, size in result.files.items():
        click.echo(f"{out / name}  {size:,} bytes")
