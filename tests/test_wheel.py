"""The built wheel works on its own (issue 17): built from a copy of the sources, installed into
a fresh virtual environment outside the checkout, its `wikihash` initialises a fresh database
(the migrations ship as package data) and answers a search.

Offline and fast: the wheel is built with the running environment's setuptools
(--no-build-isolation) and installed with --no-deps; the new environment reaches the running
environment's third-party packages through a .pth line, which adds that directory to sys.path
without running its .pth files, so the checkout's editable install is not seen. The command
runs with cwd and PYTHONPATH away from the checkout, and the test asserts that `pipeline` and
`workers` come from the new environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg2
import pytest

from tests.conftest import admin_execute

ROOT = Path(__file__).resolve().parents[1]
IMAGE = ROOT / "tests" / "data" / "images" / "adwaita_battery-good-48x48.png"


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bin directory of a fresh venv holding only the built wheel (and a path to deps)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("pipeline", "workers"):
        shutil.copytree(ROOT / package, source / package, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    dist = work / "dist"
    built = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                  "--no-build-isolation", "--no-index", "-w", str(dist), str(source)],
                 cwd=work)
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("wikihash-*.whl")

    venv = work / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    done = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                 "--no-deps", "--no-index", str(wheel)], cwd=work)
    assert done.returncode == 0, done.stderr
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"])
    (Path(site.stdout.strip()) / "wikihash-test-deps.pth").write_text(
        sysconfig.get_path("purelib") + "\n")
    return venv / "bin"


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def test_wheel_holds_the_packages_and_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    code = ("import json, pipeline, pipeline.storage as s, workers; print(json.dumps("
            "[pipeline.__file__, workers.__file__, [str(m.path) for m in s.migrations()]]))")
    shown = _run([str(installed / "python"), "-c", code], cwd=tmp_path, env=_env())
    assert shown.returncode == 0, shown.stderr
    pipeline_file, workers_file, migrations = json.loads(shown.stdout)
    venv = installed.parent.resolve()
    for path in (pipeline_file, workers_file, *migrations):
        assert Path(path).resolve().is_relative_to(venv), path
        assert not Path(path).resolve().is_relative_to(ROOT), path
    assert migrations, "no migration shipped in the wheel"


def test_wheel_db_init_and_search(installed: Path, db_url: str, tmp_path: Path) -> None:
    wikihash = str(installed / "wikihash")
    init = _run([wikihash, "db", "init", "--database-url", db_url], cwd=tmp_path, env=_env())
    assert init.returncode == 0, init.stderr
    again = _run([wikihash, "db", "init", "--database-url", db_url], cwd=tmp_path, env=_env())
    assert again.returncode == 0, again.stderr
    with psycopg2.connect(db_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM schema_migrations")
        applied = cur.fetchone()[0]
    shipped = len(list((ROOT / "pipeline" / "migrations").glob("*.sql")))
    assert applied == shipped

    found = _run([wikihash, "search", "--database-url", db_url, "--json", str(IMAGE)],
                 cwd=tmp_path, env=_env())
    assert found.returncode == 0, found.stderr
    answer = json.loads(found.stdout)
    assert answer["matches"] == []  # an empty ledger answers, with nothing
    assert isinstance(answer["hash"], str) and answer["hash"]


def test_wheel_db_init_refused_extension_is_one_line(
        installed: Path, make_database: Callable[..., str], tmp_path: Path) -> None:
    """A role that may not create the bktree extension (as where the extension is missing,
    which the shared server cannot show): `db init` fails with one line, no traceback."""
    url = make_database(extension=False)
    role = f"wikihash_wheel_{uuid.uuid4().hex[:8]}"
    admin_execute(f'CREATE ROLE "{role}" LOGIN')
    try:
        name = url.rsplit("/", 1)[1]
        admin_execute(f'ALTER DATABASE "{name}" OWNER TO "{role}"')
        role_url = url.replace("postgres@", f"{role}@", 1)
        assert role_url != url
        init = _run([str(installed / "wikihash"), "db", "init", "--database-url", role_url],
                    cwd=tmp_path, env=_env())
        assert init.returncode != 0
        lines = init.stderr.strip().splitlines()
        assert len(lines) == 1, init.stderr
        assert lines[0].startswith("Error: ") and "bktree" in lines[0]
        assert "Traceback" not in init.stderr
    finally:
        admin_execute(f'ALTER DATABASE "{url.rsplit("/", 1)[1]}" OWNER TO postgres')
        conn = psycopg2.connect(url)  # what the role made in its database goes with it
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP OWNED BY "{role}"')
        conn.close()
        admin_execute(f'DROP ROLE "{role}"')
