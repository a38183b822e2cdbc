"""The dependency between the packages runs one way: `workers` uses `pipeline`, never the reverse
(docs/architecture.md, "The seam")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def workers_imports(path: Path) -> set[str]:
    return {m for m in imported_modules(path) if m == "workers" or m.startswith("workers.")}


def test_no_pipeline_module_imports_workers():
    offenders = {str(path.relative_to(ROOT)): sorted(workers_imports(path))
                 for path in sorted((ROOT / "pipeline").rglob("*.py")) if workers_imports(path)}
    assert offenders == {}


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from workers.tasks import fetch_batch\n")
    assert workers_imports(module) == {"workers.tasks", "workers.tasks.fetch_batch"}


def test_importing_the_cli_loads_no_task_code_and_no_settings():
    """Importing every pipeline module neither imports `workers` nor reads the environment."""
    code = ("import sys, pkgutil, importlib, pipeline\n"
            "from pipeline import config\n"
            "config.load = lambda *a, **k: (_ for _ in ()).throw(SystemExit('settings read'))\n"
            "for m in pkgutil.iter_modules(pipeline.__path__):\n"
            "    if m.name == '__main__': continue\n"
            "    importlib.import_module('pipeline.' + m.name)\n"
            "assert not [m for m in sys.modules if m.split('.')[0] == 'workers'], sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_worker_with_a_bad_variable_is_a_one_line_error():
    done = subprocess.run([sys.executable, "-m", "pipeline", "worker"], capture_output=True,
                          text=True, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "WIKIHASH_THUMB_WIDTH": "123"})
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "Error: WIKIHASH_THUMB_WIDTH='123': must be one of the standard widths"
        " 20, 40, 60, 120, 250, 330, 500, 960, 1280, 1920, 3840"]
