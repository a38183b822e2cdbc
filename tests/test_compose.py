"""The container deployment (compose.yaml, compose.worker.yaml, ops/Dockerfile*, .env.example).

No Docker engine is needed: each check reads files and returns a list of problems, so the tests
run it on the repository (expecting none) and on a broken copy in tmp_path (expecting the one
planted). Issue 5.

- the compose files validate against the Compose specification's JSON schema (shipped by the
  check-jsonschema package from PyPI, vendored there from the compose-spec project);
- every application service runs `wikihash SUBCOMMAND [OPTIONS]` that `pipeline.cli.cli` parses;
- every environment variable the code reads and every `${VAR}` of the compose files is in
  .env.example, and compose's defaults are pipeline/config.py's;
- the Dockerfiles copy files that exist and install what ops/install-deps and .ci/run install;
- Grafana's dashboard asks only for metrics that Flower exports;
- the dependency locks (requirements.lock for the image, requirements-test.lock for CI) pin,
  with hashes, versions inside pyproject.toml's ranges, and the image and CI install them;
- `up -d` does not wait for the crawl (only one-shot services are waited for), Compose v1 can
  read the files (no top-level `name:`), SIGTERM'd services get time to reach a checkpoint;
- ops/compose-smoke's override puts every service on the host's network and 127.0.0.1, and its
  stand-ins are the base images the Dockerfiles and compose.yaml name.
ops/compose-smoke starts the stack for real (issue 15).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from importlib import resources
from pathlib import Path

import click
import pytest

yaml = pytest.importorskip("yaml")
jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("check_jsonschema")  # ships the Compose specification's schema

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILES = ("compose.yaml", "compose.worker.yaml")
APP_DOCKERFILE = "ops/Dockerfile"

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, ${VAR:+alt}, $VAR;
# `$$` is a literal dollar sign.
_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


# --- helpers ------------------------------------------------------------------------------------

def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """`value` with compose's variable syntax resolved from `env`, else defaults.

    A required variable (`:?`) that is unset becomes `<VAR>`, so commands stay parseable.
    """
    env = env or {}

    def replace(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        op, arg = match["op"] or "", match["arg"] or ""
        value = env.get(name)
        if op.startswith(":") and value == "":
            value = None
        if op.endswith("+"):
            return arg if value is not None else ""
        if value is not None:
            return value
        if op.endswith("-"):
            return arg
        return f"<{name}>"

    return _INTERPOLATION.sub(replace, value)


def _strings(node) -> list[str]:
    """Every string in a parsed YAML document, keys included."""
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in _strings(key) + _strings(value)]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return [node] if isinstance(node, str) else []


def compose_variables(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Every variable a compose file interpolates: name -> [(operator, argument), ...].

    Only values are interpolated, as compose does: a `${VAR}` in a comment does not count.
    """
    found: dict[str, list[tuple[str, str]]] = {}
    for match in _INTERPOLATION.finditer("\n".join(_strings(load_compose(path)))):
        if match["escaped"]:
            continue
        name = match["braced"] or match["named"]
        found.setdefault(name, []).append((match["op"] or "", match["arg"] or ""))
    return found


def load_compose(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: not a YAML mapping")
    return data


def app_services(compose: dict) -> dict[str, dict]:
    """The services built from the application image (ops/Dockerfile)."""
    return {name: service for name, service in (compose.get("services") or {}).items()
            if isinstance(service.get("build"), dict)
            and service["build"].get("dockerfile") == APP_DOCKERFILE}


def command_argv(command: str | list[str]) -> list[str]:
    if isinstance(command, str):
        return shlex.split(interpolate(command))
    return [interpolate(str(word)) for word in command]


def env_example_variables(path: Path) -> dict[str, str]:
    """Variables of .env.example, set (`VAR=x`) or shown commented (`# VAR=x`): name -> value."""
    found = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if match:
            found[match[1]] = match[2]
    return found


def settings_variables() -> dict[str, str]:
    """The WIKIHASH_* variables of pipeline/config.py's SETTINGS: name -> default."""
    from pipeline.config import SETTINGS

    return {s.env: s.default for s in SETTINGS}


def code_variables(root: Path) -> set[str]:
    """WIKIHASH_* names the code in the images mentions (reads of os.environ and the like)."""
    names = set()
    for directory in ("pipeline", "workers"):
        for path in (root / directory).rglob("*.py"):
            names |= set(re.findall(r"[\"'](WIKIHASH_[A-Z0-9_]+)[\"']",
                                    path.read_text(encoding="utf-8")))
    return names


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        instructions.append((keyword.upper(), rest.strip()))
    return instructions


def install_deps_packages(path: Path, pg_major: str = "15") -> set[str]:
    """The Debian packages in ops/install-deps's `packages=( ... )`, $PG_MAJOR expanded."""
    text = path.read_text(encoding="utf-8")
    match = re.search(r"packages=\((.*?)\)", text, re.S)
    if not match:
        return set()
    words = shlex.split(match[1], comments=True)
    return {w.replace("$PG_MAJOR", pg_major) for w in words}


def apt_installed(run: str, pg_major: str = "15") -> set[str]:
    """Packages named after `apt-get install` in a RUN step, up to the next `&&`."""
    packages = set()
    for match in re.finditer(r"apt-get install ([^&;]*)", run):
        for word in shlex.split(match[1]):
            if not word.startswith("-"):
                packages.add(word.replace("$PG_MAJOR", pg_major))
    return packages


# --- the checks: each takes paths and returns a list of problems --------------------------------

def compose_schema() -> dict:
    schema = (resources.files("check_jsonschema.builtin_schemas.vendor")
              / "compose-spec.json")
    return json.loads(schema.read_text(encoding="utf-8"))


def check_schema(compose_path: Path, schema: dict | None = None) -> list[str]:
    """Violations of the Compose specification's JSON schema."""
    schema = schema or compose_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    data = load_compose(compose_path)
    return [f"{compose_path.name}: {'/'.join(map(str, error.absolute_path)) or '(top)'}: "
            f"{error.message}"
            for error in sorted(validator.iter_errors(data), key=lambda e: list(e.path))]


def check_commands(compose_path: Path) -> list[str]:
    """Each application service's command is `wikihash ...` that pipeline.cli.cli accepts."""
    from pipeline.cli import cli

    problems = []
    services = app_services(load_compose(compose_path))
    if not services:
        problems.append(f"{compose_path.name}: no service is built from {APP_DOCKERFILE}")
    for name, service in services.items():
        where = f"{compose_path.name}: service {name}"
        if "command" not in service:
            problems.append(f"{where}: no command (the image's default is only --help)")
            continue
        argv = command_argv(service["command"])
        if not argv or argv[0] != "wikihash":
            problems.append(f"{where}: command {argv!r} does not start with wikihash")
            continue
        command, path, args = cli, ["wikihash"], argv[1:]
        while isinstance(command, click.Group) and args and not args[0].startswith("-"):
            sub = command.commands.get(args[0])
            if sub is None:
                problems.append(f"{where}: `{' '.join(path)}` has no subcommand {args[0]!r} "
                                f"(known: {', '.join(sorted(command.commands))})")
                break
            command, path, args = sub, path + [args[0]], args[1:]
        else:
            if isinstance(command, click.Group):
                problems.append(f"{where}: `{' '.join(path)}` needs a subcommand")
                continue
            try:
                command.make_context(" ".join(path), list(args))
            except click.ClickException as exc:
                problems.append(f"{where}: `{' '.join(argv)}`: {exc.format_message()}")
    return problems


def check_queues(compose_path: Path) -> list[str]:
    """Every Celery queue of pipeline/celeryapp.py has a consumer among the compose file's
    workers."""
    from pipeline.celeryapp import QUEUES

    consumed = set()
    for service in app_services(load_compose(compose_path)).values():
        argv = command_argv(service.get("command") or [])
        if argv[:2] != ["wikihash", "worker"]:
            continue
        consumed |= {"fetch", "hash", "write"}  # the command's default
        for i, word in enumerate(argv):
            if word in ("-Q", "--queues") and i + 1 < len(argv):
                consumed = set(argv[i + 1].split(","))
            elif word.startswith("--queues="):
                consumed = set(word.split("=", 1)[1].split(","))
    missing = sorted(set(QUEUES) - consumed)
    return [f"{compose_path.name}: no worker consumes queue {q}" for q in missing]


def check_environment(compose_paths: list[Path], env_example: Path,
                      root: Path = ROOT) -> list[str]:
    """Variables: the code's and the compose files' are in .env.example; defaults agree."""
    problems = []
    documented = env_example_variables(env_example)
    settings = settings_variables()
    for name in sorted(set(settings) | code_variables(root)):
        if name not in documented:
            problems.append(f"{env_example.name}: {name} (read by the code) is missing")
    for path in compose_paths:
        for name, uses in sorted(compose_variables(path).items()):
            if name not in documented:
                problems.append(f"{env_example.name}: {name} (used in {path.name}) is missing")
            for op, arg in uses:
                if name in settings and op.endswith("-") and arg != settings[name]:
                    problems.append(f"{path.name}: default of {name} is {arg!r}, "
                                    f"pipeline/config.py's is {settings[name]!r}")
        # Settings reach a container only through `environment`: .env alone is not enough.
        passed = set()
        for service in app_services(load_compose(path)).values():
            environment = service.get("environment") or {}
            if isinstance(environment, list):
                environment = dict(item.partition("=")[::2] for item in environment)
            passed |= set(environment)
        for name in sorted(set(settings) - passed):
            if name != "WIKIHASH_FLOWER_AUTH" or path.name == "compose.yaml":
                problems.append(f"{path.name}: {name} is passed to no application service")
    for name, value in sorted(documented.items()):
        if name in settings and value and value != settings[name] and "://" not in value:
            problems.append(f"{env_example.name}: {name}={value} but pipeline/config.py's "
                            f"default is {settings[name]!r}")
    return problems


def check_dockerfile(dockerfile: Path, context: Path = ROOT) -> list[str]:
    """Every COPY source exists in the build context (the repository root)."""
    problems = []
    for keyword, args in dockerfile_instructions(dockerfile):
        if keyword not in ("COPY", "ADD"):
            continue
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        if any(w.startswith("--from") for w in shlex.split(args)):
            continue
        for source in words[:-1]:
            if not any(context.glob(source)) and not (context / source).exists():
                problems.append(f"{dockerfile.name}: COPY source {source} does not exist")
    return problems


def check_build_steps(app_dockerfile: Path, postgres_dockerfile: Path, install_deps: Path,
                      ci_run: Path) -> list[str]:
    """The images install what the native path installs, and build bktree the same way."""
    problems = []
    native = install_deps_packages(install_deps)
    runs = {path: " ".join(args for keyword, args in dockerfile_instructions(path)
                           if keyword == "RUN")
            for path in (app_dockerfile, postgres_dockerfile)}
    for path, run in runs.items():
        for package in sorted(apt_installed(run) - native):
            problems.append(f"{path.name}: installs {package}, which ops/install-deps does not")
    app_needs = {"libcairo2"} & native
    for package in sorted(app_needs - apt_installed(runs[app_dockerfile])):
        problems.append(f"{app_dockerfile.name}: does not install {package} "
                        "(ops/install-deps does)")
    pg_needs = {p for p in native if p.startswith("postgresql-server-dev-")} | {"build-essential"}
    for package in sorted(pg_needs - apt_installed(runs[postgres_dockerfile])):
        problems.append(f"{postgres_dockerfile.name}: does not install {package} "
                        "(ops/install-deps does)")
    build = re.compile(r"make -C sql/bktree\b[^&]*\binstall\b")
    if not build.search(ci_run.read_text(encoding="utf-8")):
        problems.append(f"{ci_run.name}: no `make -C sql/bktree ... install`")
    if not build.search(runs[postgres_dockerfile]):
        problems.append(f"{postgres_dockerfile.name}: does not build the extension with "
                        "`make -C sql/bktree ... install` as .ci/run does")
    if "apt-get purge" not in runs[postgres_dockerfile]:
        problems.append(f"{postgres_dockerfile.name}: build packages are not purged")
    return problems


def flower_metric_names() -> set[str]:
    """Every sample name Flower's Prometheus exporter can produce."""
    import flower.options  # noqa: F401 - defines the options flower.events reads
    from flower.events import get_prometheus_metrics

    suffixes = ("", "_total", "_created", "_bucket", "_sum", "_count")
    metrics = get_prometheus_metrics()
    return {metric._name + suffix for metric in vars(metrics).values()
            if hasattr(metric, "_name") for suffix in suffixes}


def check_dashboard(dashboard: Path) -> list[str]:
    """The Prometheus queries of the dashboard name only metrics Flower exports."""
    known = flower_metric_names()
    functions = {"sum", "rate", "by", "max", "min", "avg", "histogram_quantile", "le", "task",
                 "type", "worker", "increase", "irate", "count", "without", "on"}
    problems = []
    for panel in json.loads(dashboard.read_text(encoding="utf-8"))["panels"]:
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if expr is None:
                continue
            bare = re.sub(r"\{[^}]*\}|\"[^\"]*\"|\[[^\]]*\]", " ", expr)
            for word in re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", bare):
                if word not in functions and word not in known:
                    problems.append(f"{dashboard.name}: panel {panel['title']!r} asks for "
                                    f"{word}, which Flower does not export")
    return problems


ONE_SHOT = (["wikihash", "db", "init"],)  # commands that exit once done: safe to wait for
SMOKE = ROOT / "ops" / "compose-smoke.d"


def lock_pins(path: Path) -> dict[str, tuple[str, int]]:
    """A pip-compile lock: canonical name -> (version, number of --hash options)."""
    from packaging.utils import canonicalize_name

    pins: dict[str, tuple[str, int]] = {}
    for entry in re.split(r"\n(?=[A-Za-z0-9])", path.read_text(encoding="utf-8")):
        match = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", entry)
        if match:
            pins[canonicalize_name(match[1])] = (match[2], entry.count("--hash=sha256:"))
    return pins


def check_lock(pyproject: Path, lock: Path, extras: tuple[str, ...] = ()) -> list[str]:
    """Each requirement of pyproject.toml (and `extras`) is pinned in `lock`, with hashes, to a
    version inside its range; so is the build backend."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    wanted = list(project["project"]["dependencies"])
    for extra in extras:
        wanted += project["project"]["optional-dependencies"][extra]
    wanted += project["build-system"]["requires"]
    pins = lock_pins(lock)
    problems = [f"{lock.name}: {name}=={version} has no --hash"
                for name, (version, hashes) in pins.items() if not hashes]
    for text in wanted:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        if name not in pins:
            problems.append(f"{lock.name}: {requirement.name} (pyproject.toml) is not pinned; "
                            "run ops/lock")
        elif not requirement.specifier.contains(pins[name][0], prereleases=True):
            problems.append(f"{lock.name}: {requirement.name}=={pins[name][0]} is outside "
                            f"pyproject.toml's {requirement.specifier}; run ops/lock")
    return problems


def check_locks_agree(runtime: Path, test: Path) -> list[str]:
    """CI tests the versions the image runs: every runtime pin is the same in the test lock."""
    runtime_pins, test_pins = lock_pins(runtime), lock_pins(test)
    return [f"{test.name}: {name} {test_pins.get(name, ('missing',))[0]}, "
            f"{runtime.name}: {version}"
            for name, (version, _) in runtime_pins.items()
            if test_pins.get(name, (None,))[0] != version]


def check_locked_installs(app_dockerfile: Path, ci_run: Path) -> list[str]:
    """The image installs requirements.lock and CI requirements-test.lock, hash-checked; the
    project itself goes in with --no-deps, so nothing unlocked comes along."""
    problems = []
    runs = [args for keyword, args in dockerfile_instructions(app_dockerfile) if keyword == "RUN"]
    copies = [args for keyword, args in dockerfile_instructions(app_dockerfile)
              if keyword == "COPY"]
    installs = [m for run in runs for m in re.findall(r"pip install ([^&;]*)", run)]
    if not any("requirements.lock" in c for c in copies):
        problems.append(f"{app_dockerfile.name}: does not copy requirements.lock")
    if not any("--require-hashes" in i and "-r requirements.lock" in i for i in installs):
        problems.append(f"{app_dockerfile.name}: does not install requirements.lock "
                        "with --require-hashes")
    for install in installs:
        if "-r requirements.lock" not in install and "--no-deps" not in install:
            problems.append(f"{app_dockerfile.name}: `pip install {install.strip()}` "
                            "installs outside the lock")
        if "-e ." in install and "--no-build-isolation" not in install:
            problems.append(f"{app_dockerfile.name}: `pip install {install.strip()}` downloads "
                            "an unlocked build backend (use --no-build-isolation)")
    ci = ci_run.read_text(encoding="utf-8")
    ci_installs = re.findall(r"pip install ([^\n&;]*)", ci)
    if not any("--require-hashes" in i and "requirements-test.lock" in i for i in ci_installs):
        problems.append(f"{ci_run.name}: does not install requirements-test.lock "
                        "with --require-hashes")
    for install in ci_installs:
        if "-e" in install.split() and "--no-deps" not in install:
            problems.append(f"{ci_run.name}: `pip install {install.strip()}` installs "
                            "outside the lock")
    return problems


def check_startup(compose_path: Path) -> list[str]:
    """`up -d` returns: no service waits for the completion of one that runs for long (the
    producer's first crawl takes days); Compose v1 reads the file (no top-level `name:`);
    services that stop at a checkpoint on SIGTERM get time to reach it."""
    compose = load_compose(compose_path)
    problems = []
    if "name" in compose:
        problems.append(f"{compose_path.name}: top-level `name:` (Compose v1 refuses the file)")
    services = compose.get("services") or {}
    for name, service in services.items():
        for dependency, how in (service.get("depends_on") or {}).items():
            if how.get("condition") != "service_completed_successfully":
                continue
            argv = command_argv(services.get(dependency, {}).get("command") or [])
            if argv not in [list(c) for c in ONE_SHOT]:
                problems.append(f"{compose_path.name}: {name} waits for {dependency} "
                                f"(`{' '.join(argv)}`) to complete: `up -d` would block")
        argv = command_argv(service.get("command") or [])
        if argv[:2] in (["wikihash", "crawl"], ["wikihash", "recrawl"], ["wikihash", "worker"]):
            if "postgres" in services and "postgres" not in (service.get("depends_on") or {}):
                problems.append(f"{compose_path.name}: {name} writes to PostgreSQL but does not "
                                "depend on it: `stop` may stop PostgreSQL first, mid-batch")
            grace = str(service.get("stop_grace_period", "10s"))
            if not re.fullmatch(r"\d+s", grace) or int(grace[:-1]) < 30:
                problems.append(f"{compose_path.name}: {name} stops at a checkpoint on "
                                f"SIGTERM; stop_grace_period {grace} is under 30s")
    return problems


def check_smoke_override(compose_path: Path, override_path: Path) -> list[str]:
    """Every service compose-smoke starts is on the host's network (its dockerd has no bridge),
    its servers listen on 127.0.0.1, and the override names only services of the file."""
    services = load_compose(compose_path).get("services") or {}
    override = load_compose(override_path).get("services") or {}
    problems = [f"{override_path.name}: {name} is not a service of {compose_path.name}"
                for name in override if name not in services]
    for name, service in services.items():
        if service.get("profiles"):
            continue
        if (override.get(name) or {}).get("network_mode") != "host":
            problems.append(f"{override_path.name}: {name} is not on network_mode: host")
        if service.get("build") and "network" not in ((override.get(name) or {}).get("build")
                                                      or {}):
            problems.append(f"{override_path.name}: {name} builds without network: host")
    for name, service in override.items():
        argv = command_argv(service.get("command") or [])
        text = " ".join(argv)
        if "0.0.0.0" in text or ("--address" in argv and "127.0.0.1" not in text):
            problems.append(f"{override_path.name}: {name} listens beyond 127.0.0.1")
    return problems


def base_images(root: Path = ROOT) -> set[str]:
    """The images Docker Hub would serve: FROMs of ops/Dockerfile* and compose.yaml's images
    outside the monitoring profile."""
    images = {args.split()[0] for name in ("Dockerfile", "Dockerfile.postgres")
              for keyword, args in dockerfile_instructions(root / "ops" / name)
              if keyword == "FROM"}
    for service in (load_compose(root / "compose.yaml").get("services") or {}).values():
        if "image" in service and "build" not in service and not service.get("profiles"):
            images.add(service["image"])
    return images


def smoke_standins(script: Path, directory: Path) -> dict[str, Path]:
    """The stand-ins ops/compose-smoke builds: tag -> Dockerfile in ops/compose-smoke.d."""
    found = re.findall(r"([a-z0-9.-]+:[a-z0-9.-]+)=([a-z]+)\b", script.read_text())
    return {tag: directory / f"{name}.Dockerfile" for tag, name in found}


# --- on the repository: no problem -------------------------------------------------------------

@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_files_follow_the_compose_specification(name):
    assert check_schema(ROOT / name) == []


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_every_service_runs_a_wikihash_command_the_cli_accepts(name):
    assert check_commands(ROOT / name) == []


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_every_queue_has_a_worker(name):
    assert check_queues(ROOT / name) == []


def test_every_variable_is_in_env_example_with_the_code_defaults():
    assert check_environment([ROOT / n for n in COMPOSE_FILES], ROOT / ".env.example") == []


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.postgres"])
def test_dockerfile_copy_sources_exist(name):
    assert check_dockerfile(ROOT / "ops" / name) == []


def test_images_install_what_the_native_path_installs():
    assert check_build_steps(ROOT / "ops/Dockerfile", ROOT / "ops/Dockerfile.postgres",
                             ROOT / "ops/install-deps", ROOT / ".ci/run") == []


def test_locks_pin_pyproject_ranges_with_hashes():
    assert check_lock(ROOT / "pyproject.toml", ROOT / "requirements.lock") == []
    assert check_lock(ROOT / "pyproject.toml", ROOT / "requirements-test.lock",
                      extras=("test",)) == []
    assert check_locks_agree(ROOT / "requirements.lock", ROOT / "requirements-test.lock") == []


def test_image_and_ci_install_the_locks():
    assert check_locked_installs(ROOT / "ops/Dockerfile", ROOT / "ops/setup") == []


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_up_returns_and_compose_v1_reads_the_file(name):
    assert check_startup(ROOT / name) == []


@pytest.mark.parametrize("name, override", [("compose.yaml", "compose.host.yaml"),
                                            ("compose.worker.yaml", "compose.worker.host.yaml")])
def test_smoke_override_keeps_everything_on_loopback_host_networking(name, override):
    assert check_smoke_override(ROOT / name, SMOKE / override) == []


def test_smoke_builds_a_stand_in_for_each_base_image():
    standins = smoke_standins(ROOT / "ops/compose-smoke", SMOKE)
    assert base_images() <= set(standins), base_images() - set(standins)
    for tag, dockerfile in standins.items():
        (from_line,) = [a for k, a in dockerfile_instructions(dockerfile) if k == "FROM"]
        assert from_line in standins or from_line == "wikihash-smoke/rootfs:bookworm", tag


def test_dashboard_asks_only_for_flower_metrics():
    assert check_dashboard(ROOT / "ops/monitoring/grafana/dashboards/wikihash.json") == []


def test_compose_file_keeps_no_secret_and_requires_the_contact():
    variables = compose_variables(ROOT / "compose.yaml")
    for name in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "WIKIHASH_USER_AGENT",
                 "WIKIHASH_FLOWER_AUTH"):
        assert variables[name] and all(op == ":?" for op, _ in variables[name]), name
    services = load_compose(ROOT / "compose.yaml")["services"]
    assert "--address" in command_argv(services["flower"]["command"])
    assert all(port.startswith(("127.0.0.1:", "${")) for port in services["flower"]["ports"])
    assert services["migrate"]["restart"] == "on-failure"
    assert services["worker"]["restart"] == "unless-stopped"
    for name, service in services.items():
        for dependency in (service.get("depends_on") or {}).values():
            assert dependency["condition"] in ("service_healthy", "service_completed_successfully",
                                               "service_started"), name


def test_env_example_documents_each_setting_with_its_help():
    from pipeline.config import SETTINGS

    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    for setting in SETTINGS:
        assert setting.help in text, setting.env


def test_prometheus_config_keeps_no_secret():
    config = yaml.safe_load((ROOT / "ops/monitoring/prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert set(job["basic_auth"]) == {"username_file", "password_file"}


def test_interpolation_follows_compose():
    assert interpolate("${A:-x} ${B-y} $$C ${D:?no}", {"B": ""}) == "x  $C <D>"
    assert interpolate("${A:+set}", {"A": "1"}) == "set"


# --- on broken copies: each check reports what was planted -------------------------------------

@pytest.fixture
def tree(tmp_path):
    """A copy of the deployment files, to break one at a time."""
    for name in (*COMPOSE_FILES, ".env.example", "ops/Dockerfile", "ops/Dockerfile.postgres",
                 "ops/install-deps", ".ci/run", "ops/setup",
                 "ops/monitoring/grafana/dashboards/wikihash.json",
                 "pyproject.toml", "requirements.lock", "requirements-test.lock",
                 "ops/compose-smoke.d/compose.host.yaml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    """Replace the first `count` occurrences (-1: all) of `old` in the file at `path`."""
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, count), encoding="utf-8")


def test_schema_check_reports_a_violation(tree):
    edit(tree / "compose.yaml", "    restart: on-failure\n", "    restart: on-failure\n"
         "    healthcheck: yes-please\n")
    edit(tree / "compose.worker.yaml", "    init: true\n", "    init: true\n    replicas: 3\n")
    assert any("healthcheck" in p for p in check_schema(tree / "compose.yaml"))
    assert any("replicas" in p for p in check_schema(tree / "compose.worker.yaml"))


def test_command_check_reports_an_unknown_subcommand(tree):
    edit(tree / "compose.yaml", '["wikihash", "crawl"]', '["wikihash", "crawwl"]')
    (problem,) = check_commands(tree / "compose.yaml")
    assert "no subcommand 'crawwl'" in problem


def test_command_check_reports_an_unknown_option_and_a_bad_value(tree):
    edit(tree / "compose.yaml", '["wikihash", "db", "init"]', '["wikihash", "db", "init", "--yes"]')
    edit(tree / "compose.yaml", '"--port", "5555"]', '"--port", "many"]')
    problems = check_commands(tree / "compose.yaml")
    assert any("service migrate" in p and "--yes" in p for p in problems), problems
    assert any("service flower" in p and "many" in p for p in problems), problems


def test_command_check_reports_a_non_wikihash_command(tree):
    edit(tree / "compose.yaml", '["wikihash", "crawl"]', '["python", "-m", "pipeline", "crawl"]')
    (problem,) = check_commands(tree / "compose.yaml")
    assert "does not start with wikihash" in problem


def test_queue_check_reports_an_unconsumed_queue(tree):
    edit(tree / "compose.worker.yaml", "${WORKER_QUEUES:-fetch,hash,write}",
         "${WORKER_QUEUES:-fetch,hash}")
    assert check_queues(tree / "compose.worker.yaml") == [
        "compose.worker.yaml: no worker consumes queue write"]


def test_environment_check_reports_a_variable_missing_from_env_example(tree):
    edit(tree / "compose.yaml", "${WORKER_LOGLEVEL:-INFO}", "${WORKER_LOG_LEVEL:-INFO}")
    edit(tree / ".env.example", "# WIKIHASH_MAXLAG=5\n", "")
    problems = check_environment([tree / n for n in COMPOSE_FILES], tree / ".env.example")
    assert ".env.example: WORKER_LOG_LEVEL (used in compose.yaml) is missing" in problems
    assert ".env.example: WIKIHASH_MAXLAG (read by the code) is missing" in problems


def test_environment_check_reports_a_drifted_default_and_a_setting_not_passed(tree):
    edit(tree / "compose.yaml", "${WIKIHASH_THUMB_WIDTH:-250}", "${WIKIHASH_THUMB_WIDTH:-330}")
    edit(tree / "compose.worker.yaml",
         '      WIKIHASH_MAXLAG: "${WIKIHASH_MAXLAG:-5}"\n', "")
    problems = check_environment([tree / n for n in COMPOSE_FILES], tree / ".env.example")
    assert any("default of WIKIHASH_THUMB_WIDTH is '330'" in p for p in problems), problems
    assert ("compose.worker.yaml: WIKIHASH_MAXLAG is passed to no application service"
            in problems)


def test_environment_check_reads_the_code(tree, tmp_path):
    code = tmp_path / "code"
    (code / "pipeline").mkdir(parents=True)
    (code / "workers").mkdir()
    (code / "pipeline" / "extra.py").write_text('os.environ.get("WIKIHASH_NEW_KNOB")\n')
    problems = check_environment([tree / "compose.yaml"], tree / ".env.example", root=code)
    assert ".env.example: WIKIHASH_NEW_KNOB (read by the code) is missing" in problems


def test_dockerfile_check_reports_a_missing_copy_source(tree):
    edit(tree / "ops/Dockerfile", "COPY sql ./sql", "COPY sql ./sql\nCOPY migrations ./migrations")
    assert check_dockerfile(tree / "ops/Dockerfile") == [
        "Dockerfile: COPY source migrations does not exist"]


def test_build_step_check_reports_drift_from_the_native_path(tree):
    edit(tree / "ops/Dockerfile", "install -y --no-install-recommends libcairo2",
         "install -y --no-install-recommends libcairo2-dev")
    edit(tree / "ops/Dockerfile.postgres", "make -C sql/bktree", "make -C /src", count=-1)
    problems = check_build_steps(tree / "ops/Dockerfile", tree / "ops/Dockerfile.postgres",
                                 tree / "ops/install-deps", tree / ".ci/run")
    assert "Dockerfile: installs libcairo2-dev, which ops/install-deps does not" in problems
    assert "Dockerfile: does not install libcairo2 (ops/install-deps does)" in problems
    assert any("Dockerfile.postgres: does not build the extension" in p for p in problems)


def test_dashboard_check_reports_an_unknown_metric(tree):
    path = tree / "ops/monitoring/grafana/dashboards/wikihash.json"
    edit(path, "sum(flower_worker_online)", "sum(celery_queue_length)")
    (problem,) = check_dashboard(path)
    assert "celery_queue_length" in problem


def test_lock_check_reports_an_unpinned_and_an_out_of_range_dependency(tree):
    edit(tree / "pyproject.toml", '"click>=8.1,<9",', '"click>=8.1,<9",\n    "tomli-w>=1",')
    edit(tree / "pyproject.toml", '"redis>=5,<9"', '"redis>=5,<6"')
    edit(tree / "requirements.lock", "--hash=sha256:", "--sha=", count=2)
    problems = check_lock(tree / "pyproject.toml", tree / "requirements.lock")
    assert "requirements.lock: tomli-w (pyproject.toml) is not pinned; run ops/lock" in problems
    assert any(p.startswith("requirements.lock: redis==") and "outside" in p for p in problems)
    assert any(p.startswith("requirements.lock: amqp==") and "no --hash" in p for p in problems)


def test_lock_agreement_check_reports_a_drifted_pin(tree):
    version, _ = lock_pins(tree / "requirements.lock")["click"]
    edit(tree / "requirements-test.lock", f"click=={version}", "click==0.0.1")
    assert check_locks_agree(tree / "requirements.lock", tree / "requirements-test.lock") == [
        f"requirements-test.lock: click 0.0.1, requirements.lock: {version}"]


def test_locked_install_check_reports_an_unlocked_install(tree):
    edit(tree / "ops/Dockerfile", "--require-hashes --no-deps -r requirements.lock",
         "-r requirements.lock")
    edit(tree / "ops/Dockerfile", "--no-deps --no-build-isolation -e .", "-e .")
    edit(tree / "ops/setup", "--require-hashes", "")
    problems = check_locked_installs(tree / "ops/Dockerfile", tree / "ops/setup")
    assert "Dockerfile: does not install requirements.lock with --require-hashes" in problems
    assert "Dockerfile: `pip install -e .` installs outside the lock" in problems
    assert "setup: does not install requirements-test.lock with --require-hashes" in problems


def test_startup_check_reports_a_blocking_wait_a_name_and_a_short_grace(tree):
    edit(tree / "compose.yaml", """    depends_on:
      postgres:
        condition: service_healthy
      migrate:
        condition: service_completed_successfully
      redis:
        condition: service_healthy
    stop_grace_period: 60s
    restart: unless-stopped""", """    depends_on:
      producer:
        condition: service_completed_successfully
      redis:
        condition: service_healthy
    restart: unless-stopped""")
    edit(tree / "compose.yaml", "services:\n", "name: wikihash\n\nservices:\n")
    problems = check_startup(tree / "compose.yaml")
    assert "compose.yaml: recrawl waits for producer (`wikihash crawl`) to complete: `up -d` " \
           "would block" in problems
    assert "compose.yaml: top-level `name:` (Compose v1 refuses the file)" in problems
    assert "compose.yaml: recrawl stops at a checkpoint on SIGTERM; stop_grace_period 10s is " \
           "under 30s" in problems
    assert "compose.yaml: recrawl writes to PostgreSQL but does not depend on it: `stop` may " \
           "stop PostgreSQL first, mid-batch" in problems


def test_smoke_override_check_reports_a_bridged_service_and_a_wide_address(tree):
    override = tree / "ops/compose-smoke.d/compose.host.yaml"
    edit(override, "  recrawl: *app\n", "")
    edit(override, '"--address", "127.0.0.1"', '"--address", "0.0.0.0"')
    problems = check_smoke_override(tree / "compose.yaml", override)
    assert "compose.host.yaml: recrawl is not on network_mode: host" in problems
    assert "compose.host.yaml: flower listens beyond 127.0.0.1" in problems
