"""Security: loopback defaults, no credentials in the tree, parameterised SQL, hostile titles.

- `wikihash serve` and `wikihash flower` listen on 127.0.0.1 by default, and compose publishes
  every port on 127.0.0.1 unless told otherwise; no password is written in code or compose files
  (they come from the environment, and compose refuses to start without them).
- Every SQL statement in pipeline/ and workers/ is a constant or composed with psycopg2.sql;
  values always travel as parameters (a static check over the syntax tree).
- Titles and file names with quotes, backslashes, SQL fragments, format markers and non-Latin
  text go through the crawl (the real producer against a fake wiki), the writer, search and
  export, and come out exactly as they went in.
URL fetching is covered elsewhere: tests/test_fetch.py (crawl: only hosts the wiki's imageinfo
named, each redirect hop checked) and tests/test_web.py (search: private, loopback and
link-local addresses refused, after redirects and against DNS rebinding).
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
import yaml
from fakewiki import FakeWiki, FakeWikiServer
from wikis import generated_image

from pipeline import export, imaging, ledger, search, storage
from pipeline.cli import cli
from pipeline.ledger import Result
from pipeline.producer import Producer
from pipeline.wiki import Wiki
from tests.conftest import sql_rows

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"

# -- listening addresses ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["serve", "flower"])
def test_servers_listen_on_loopback_by_default(command):
    option = next(p for p in cli.commands[command].params if p.name == "address")
    assert option.default == LOOPBACK


def _compose_files() -> list[Path]:
    return sorted(ROOT.glob("compose*.yaml"))


def test_compose_publishes_ports_on_loopback_by_default():
    published = 0
    for path in _compose_files():
        services = yaml.safe_load(path.read_text()).get("services", {})
        for name, service in services.items():
            for port in service.get("ports", []):
                spec = port if isinstance(port, str) else str(port.get("host_ip", ""))
                # "127.0.0.1:5432:5432" or "${PUBLISH_ADDRESS:-127.0.0.1}:5432:5432"
                host = re.match(r"^(\$\{[A-Z_]+:-([^}]*)\}|[\d.]+):", spec)
                assert host, f"{path.name}: {name} publishes {spec!r} on every interface"
                assert (host.group(2) or host.group(1)) == LOOPBACK, (path.name, name, spec)
                published += 1
    assert published  # the check looked at something


_SECRET_NAME = re.compile(r"(?i)(password|passwd|secret|auth|token|api_key)")
# Credentials written into a URL: scheme://user:secret@host, unless the secret is a placeholder.
_URL_CREDENTIALS = re.compile(r"://[^/:@\s\"']*:(?!\$\{)[^@/\s\"']+@")


def _docstrings(tree: ast.Module) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def _python_secrets(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    docstrings = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        pairs = []
        if isinstance(node, ast.Assign):
            pairs = [(ast.unparse(t), node.value) for t in node.targets]
        elif isinstance(node, ast.keyword) and node.arg:
            pairs = [(node.arg, node.value)]
        elif isinstance(node, ast.Dict):
            pairs = [(k.value, v) for k, v in zip(node.keys, node.values, strict=True)
                     if isinstance(k, ast.Constant) and isinstance(k.value, str)]
        for name, value in pairs:
            if _SECRET_NAME.search(name) and isinstance(value, ast.Constant) and isinstance(
                    value.value, str) and value.value:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name} = {value.value!r}")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings and _URL_CREDENTIALS.search(node.value):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    return found


def _compose_secrets(path: Path) -> list[str]:
    found = []
    for name, service in (yaml.safe_load(path.read_text()).get("services") or {}).items():
        environment = service.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.partition("=")[::2] for item in environment)
        for key, value in environment.items():
            value = str(value or "")
            if _SECRET_NAME.search(key) and value and not value.startswith("${"):
                found.append(f"{path.name}: {name}: {key}={value}")
            if not value.startswith("${") and _URL_CREDENTIALS.search(value):
                found.append(f"{path.name}: {name}: {key}={value}")
    return found


def test_no_credentials_in_code_or_compose():
    found = [s for path in [*ROOT.glob("pipeline/*.py"), *ROOT.glob("workers/*.py")]
             for s in _python_secrets(path)]
    found += [s for path in _compose_files() for s in _compose_secrets(path)]
    assert not found, "\n".join(found)


def test_the_credentials_check_catches_a_literal(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text('DB = "postgresql://postgres:hunter2@db/wikihash"\n'
                     'connect(password="hunter2")\n')
    assert len(_python_secrets_at(probe)) == 2


def _python_secrets_at(path: Path) -> list[str]:
    global ROOT
    saved, ROOT = ROOT, path.parent
    try:
        return _python_secrets(path)
    finally:
        ROOT = saved


def test_local_defaults_use_loopback_and_no_password():
    from pipeline import config

    settings = config.load({})
    urls = [settings.database_url, settings.broker_url]
    for url in urls:
        assert "@127.0.0.1:" in url or "//127.0.0.1:" in url, url
        assert not _URL_CREDENTIALS.search(url), url
    # ops/services trusts password-less connections from loopback only.
    services = (ROOT / "ops" / "services").read_text()
    for line in re.findall(r"host all \S+ (\S+) trust", services):
        assert line in ("127.0.0.1/32", "::1/128"), line


# -- SQL is parameterised -----------------------------------------------------------------------

_SQL_CALLS = {"execute", "executemany", "execute_values", "copy_expert", "mogrify"}


def _constant_names(tree: ast.Module) -> set[str]:
    """Module-level names bound once to a string literal (or an implicit concatenation)."""
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(
                node.targets[0], ast.Name) and isinstance(node.value, ast.Constant):
            names.add(node.targets[0].id)
    return names


def _loop_over_literals(tree: ast.Module) -> set[str]:
    """Names of loop variables that iterate over a literal tuple or list of strings."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.For) and isinstance(node.target, ast.Name) and isinstance(
                node.iter, ast.Tuple | ast.List) and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.iter.elts):
            names.add(node.target.id)
    return names


def _unsafe_sql(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    safe_names = _constant_names(tree) | _loop_over_literals(tree)
    problems = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name not in _SQL_CALLS:
            continue
        position = 1 if name == "execute_values" else 0
        if len(node.args) <= position:
            continue
        statement = node.args[position]
        where = f"{path.relative_to(ROOT)}:{node.lineno}"
        if isinstance(statement, ast.JoinedStr):
            for value in statement.values:
                if isinstance(value, ast.FormattedValue) and not (
                        isinstance(value.value, ast.Name) and value.value.id in safe_names):
                    problems.append(f"{where}: f-string interpolates {ast.unparse(value.value)}")
        elif isinstance(statement, ast.BinOp) and isinstance(statement.op, ast.Mod | ast.Add):
            problems.append(f"{where}: SQL built with {type(statement.op).__name__}")
        elif isinstance(statement, ast.Call) and isinstance(statement.func, ast.Attribute) \
                and statement.func.attr == "format":
            # sql.SQL("...").format(sql.Identifier(...)) is psycopg2's safe composition.
            receiver = statement.func.value
            if not (isinstance(receiver, ast.Call) and ast.unparse(receiver.func).endswith(
                    "sql.SQL")):
                problems.append(f"{where}: SQL built with str.format")
    return problems


def test_sql_statements_are_constants_or_composed_safely():
    paths = [*ROOT.glob("pipeline/*.py"), *ROOT.glob("workers/*.py")]
    problems = [p for path in paths for p in _unsafe_sql(path)]
    assert not problems, "\n".join(problems)


def test_the_static_check_catches_interpolation(tmp_path):
    """The check above is able to fail."""
    bad = ROOT / "pipeline" / "_security_probe.py"
    bad.write_text('def f(cur, title):\n    cur.execute(f"SELECT 1 FROM pages WHERE title = '
                   '\'{title}\'")\n    cur.execute("SELECT %s" % title)\n'
                   '    cur.execute("SELECT {}".format(title))\n')
    try:
        assert len(_unsafe_sql(bad)) == 3
    finally:
        bad.unlink()


# -- hostile titles round-trip ------------------------------------------------------------------

TITLES = [
    "Robert'); DROP TABLE pages;--",
    "O\\'Brien",
    "ÄÖ 日本 🙂",
    "100%s done",
    "Quote \" and back\\slash",
    "Semi; colon $1 :name",
]
FILES = [
    "Robert'); DROP TABLE files;--.png",
    "O\\'Brien.png",
    "ÄÖ 日本 🙂.png",
    "%s %(x)s.png",
    "E'\\x00 escape.png",
]




def test_hostile_titles_round_trip_through_crawl_search_and_export(db_url, make_database,
                                                                     tmp_path):
    storage.migrate(db_url)
    wiki = FakeWiki()
    images = {}
    for i, name in enumerate(FILES):
        images[name] = generated_image(500 + i)
        wiki.add_file(name, images[name])
    for i, title in enumerate(TITLES):
        wiki.add_page(title, images=[FILES[i % len(FILES)]])
    with FakeWikiServer(wiki) as server:
        sent = []
        producer = Producer(Wiki(server.api_url, "wikihash-test/0.1 (test@example.org)"),
                            lambda: storage.connect(db_url), sent.extend, thumb_width=250)
        try:
            assert producer.walk()
            producer.dispatch()
        finally:
            producer.close()
        # The workers' part, in process: download, hash, write by SHA-1.
        session = requests.Session()
        session.trust_env = False
        results, served = [], {}
        for job in sent:
            data = served[job.title] = session.get(job.thumb_url or job.url, timeout=10).content
            hashed = imaging.hash_bytes(data)
            results.append(Result(job.sha1, "hashed", dhash=hashed.int64,
                                  low_information=hashed.low_information, hashed_from="thumb"))
        with storage.connection(db_url) as conn:
            ledger.write_results(conn, results)

    assert sorted(t for (t,) in sql_rows(db_url, "SELECT title FROM pages")) == sorted(TITLES)
    assert sorted(t for (t,) in sql_rows(db_url, "SELECT title FROM files")) == sorted(FILES)
    assert sql_rows(db_url, "SELECT count(*) FROM files WHERE state = 'hashed'") == [(len(FILES),)]
    # Nothing was dropped or altered by a title: the tables are all there.
    tables = {t for (t,) in sql_rows(db_url, "SELECT tablename FROM pg_tables"
                                          " WHERE schemaname = 'public'")}
    assert {"pages", "files", "usages", "crawl_state"} <= tables

    # Search: each file finds exactly the articles that use it, spelled as the wiki does.
    with storage.connection(db_url) as conn:
        for i, name in enumerate(FILES):
            found = search.search_bytes(conn, served[name], max_distance=0)
            match = next(m for m in found.matches if m.title == name)
            users = {t for j, t in enumerate(TITLES) if j % len(FILES) == i}
            assert {a.title for a in match.articles} == users

    # Export: hashes.sql loads into a new database with every title intact.
    if shutil.which("psql") is None:
        pytest.skip("psql not installed")
    export.export(db_url, tmp_path / "out")
    target = make_database(extension=True)
    loaded = subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", target, "-f",
                             str(tmp_path / "out" / "hashes.sql")],
                            capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    urls = {u for (u,) in sql_rows(target, "SELECT url FROM hashes")}
    assert urls == {t.replace(" ", "_") for t in TITLES}


# -- issue 18: secrets on command lines and screens, local files ----------------------------------


def test_export_never_puts_the_password_on_pg_dumps_command_line(db_url, tmp_path):
    """Issue 18 #11: the URL with its password was pg_dump's argv, readable in /proc by anyone.
    The shared server trusts loopback, so the password is ignored but must travel all the same."""
    import os
    import threading

    storage.migrate(db_url)
    secret = "not-on-argv-8c1f"
    url = db_url.replace("postgresql://postgres@", f"postgresql://postgres:{secret}@")
    seen: list[str] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as handle:
                            line = handle.read().replace(b"\0", b" ").decode(errors="replace")
                    except OSError:
                        continue
                    if "pg_dump" in line:
                        seen.append(line)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        export.export(url, tmp_path / "out")
    finally:
        done.set()
        watcher.join()
    assert seen, "pg_dump was never seen running"
    assert not [line for line in seen if secret in line]
    assert export.without_password(url) == (db_url, {"PGPASSWORD": secret})
    query = export.without_password("postgresql://me@db/x?password=p%26w&sslmode=require")
    assert query == ("postgresql://me@db/x?sslmode=require", {"PGPASSWORD": "p&w"})


def test_config_masks_passwords_in_every_url(monkeypatch):
    """Issue 18 #12: `?password=` and credentials in the API URL were printed as they are."""
    from click.testing import CliRunner

    monkeypatch.setenv("WIKIHASH_DATABASE_URL",
                       "postgresql://me@db.example/wikihash?password=hunter2&sslmode=require")
    monkeypatch.setenv("WIKIHASH_API_URL", "https://bot:s3cret@wiki.example/w/api.php?token=t0k")
    out = CliRunner().invoke(cli, ["config"]).output
    for secret in ("hunter2", "s3cret", "t0k"):
        assert secret not in out
    assert "sslmode=require" in out and "https://bot:***@wiki.example/w/api.php" in out


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "huge"])
def test_wikihash_hash_refuses_what_it_cannot_read_in_bounds(tmp_path, kind):
    """Issue 18 #17: /dev/zero read without limit, a FIFO hung, a 1 GB file was read whole."""
    import os
    import sys
    import time

    if kind == "dev-zero":
        path = "/dev/zero"
    elif kind == "fifo":
        path = str(tmp_path / "pipe")
        os.mkfifo(path)
    else:
        path = str(tmp_path / "huge.png")
        with open(path, "wb") as handle:  # sparse: 1 GB declared, nothing written
            handle.truncate(1024**3)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pipeline", "hash", "--json", path],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 1
    error = json.loads(proc.stdout)["error"]
    assert error.startswith("toolarge" if kind == "huge" else "cannot read"), error
    assert time.monotonic() - started < 10
