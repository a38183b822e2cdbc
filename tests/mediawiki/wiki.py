"""One real MediaWiki (Debian's package, SQLite) installed into a directory and served on 127.0.0.1.

The code is Debian's, read in place from /usr/share/mediawiki; everything of the wiki's own
(LocalSettings.php, the SQLite database, uploaded files and rendered thumbnails) lives under
its directory, so nothing under /etc/mediawiki or /var/lib/mediawiki is touched. `php -S`
serves it through `router.php`, which hands a missing thumbnail to MediaWiki's own 404
handler (`thumb_handler.php`): thumbnails are made on request by ImageMagick (rsvg for SVG).
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

MEDIAWIKI = Path(os.environ.get("WIKIHASH_MEDIAWIKI", "/usr/share/mediawiki"))
ROUTER = Path(__file__).resolve().parent / "router.php"
ADMIN, PASSWORD = "Admin", "wikihash-test-password-1"
SERVER_WORKERS = "4"  # php -S processes (PHP_CLI_SERVER_WORKERS): thumbnails render in parallel
# Seconds for one API call: saving the 520-file gallery (each name looked up in the shared
# repository's API) took over 120 s on a 2-core machine at load 17.
CALL_TIMEOUT = 600

SETTINGS = """
# -- wikihash test settings --------------------------------------------------------------
$wgEnableUploads = true;
$wgUseImageMagick = true;
$wgImageMagickConvertCommand = '/usr/bin/convert';
$wgSVGConverter = 'rsvg';
$wgGenerateThumbnailOnParse = false;  # thumbnails are made when first asked for
$wgUploadDirectory = '{images}';
$wgUploadPath = '/images';
$wgFileExtensions = ['png', 'gif', 'jpg', 'jpeg', 'webp', 'svg', 'pdf', 'ogg'];
$wgMainCacheType = CACHE_NONE;
$wgParserCacheType = CACHE_NONE;
$wgShowExceptionDetails = true;
$wgRateLimits = [];
$wgEnableEmail = false;
$wgJobRunRate = 0;  # link updates run in the request that made them, none left to a job
$wgRCMaxAge = 90 * 86400;
$wgGroupPermissions['sysop']['noratelimit'] = true;
"""

FOREIGN_REPO = """
$wgForeignFileRepos[] = [
    'class' => ForeignAPIRepo::class,
    'name' => '{name}',
    'apibase' => '{api}',
    'hashLevels' => 2,
    'fetchDescription' => false,
    'descriptionCacheExpiry' => 0,
    'apiThumbCacheExpiry' => 0,  # thumbnails are served by the repository itself, as Commons'
    'apiMetadataExpiry' => 0,
];
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MediaWikiError(RuntimeError):
    """A maintenance script or an API call of the test wiki failed."""


@dataclass
class MediaWiki:
    """A wiki at `root`: `install()` it once, `start()` it, change it through its API."""

    root: Path
    name: str  # database name, also the repository name it has for other wikis
    sitename: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    session: requests.Session | None = None

    @property
    def server(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.server}/api.php"

    @property
    def settings(self) -> Path:
        return self.root / "LocalSettings.php"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def database(self) -> Path:
        return self.root / "data" / f"{self.name}.sqlite"

    def env(self) -> dict[str, str]:
        return {**os.environ, "MW_CONFIG_FILE": str(self.settings),
                "WIKIHASH_MW_IMAGES": str(self.images)}

    # -- install and serve -----------------------------------------------------------------

    def install(self, foreign: MediaWiki | None = None) -> None:
        """maintenance/install.php into `root`, then the test settings (and `foreign`'s repo)."""
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        self.images.mkdir(exist_ok=True)
        self.php("install.php", "--dbtype", "sqlite", "--dbpath", str(self.root / "data"),
                 "--dbname", self.name, "--server", self.server, "--scriptpath", "",
                 "--confpath", str(self.root), "--pass", PASSWORD, "--lang", "en",
                 "--skins", "", self.sitename, ADMIN, installing=True)
        extra = SETTINGS.format(images=self.images)
        if foreign is not None:
            extra += FOREIGN_REPO.format(name=foreign.name, api=foreign.api_url)
        with self.settings.open("a") as out:
            out.write(extra)

    def php(self, script: str, *args: str, stdin: str | None = None,
            installing: bool = False) -> str:
        """Run one of MediaWiki's maintenance scripts on this wiki; its output."""
        env = self.env()
        if installing:
            env.pop("MW_CONFIG_FILE")  # install.php writes it (--confpath)
        done = subprocess.run(["php", str(MEDIAWIKI / "maintenance" / script), *args],
                              cwd=MEDIAWIKI, env=env, input=stdin, capture_output=True,
                              text=True, timeout=300)
        if done.returncode != 0:
            raise MediaWikiError(f"{script} failed ({done.returncode}): "
                                 f"{(done.stdout + done.stderr)[-2000:]}")
        return done.stdout

    def start(self) -> None:
        log = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen(
            ["php", "-d", "upload_max_filesize=64M", "-d", "post_max_size=64M",
             "-S", f"127.0.0.1:{self.port}", "-t", str(MEDIAWIKI), str(ROUTER)],
            cwd=MEDIAWIKI, env={**self.env(), "PHP_CLI_SERVER_WORKERS": SERVER_WORKERS},
            stdout=log, stderr=log, start_new_session=True)
        self.session = requests.Session()
        self.session.trust_env = False
        deadline = time.monotonic() + 30
        while True:
            try:
                self.session.get(self.api_url, timeout=5)
                break
            except requests.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise MediaWikiError(f"php -S for {self.name} did not start") from None
                time.sleep(0.1)
        self._login()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            self.proc.wait(timeout=20)
        self.proc = None

    def __enter__(self) -> MediaWiki:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the API, as a logged-in administrator ---------------------------------------------

    def call(self, method: str = "GET", files: dict | None = None, **params: str) -> dict:
        assert self.session is not None, "start() the wiki first"
        params = {"format": "json", "formatversion": "2", **params}
        if method == "GET":
            response = self.session.get(self.api_url, params=params, timeout=CALL_TIMEOUT)
        else:
            response = self.session.post(self.api_url, data=params, files=files,
                                         timeout=CALL_TIMEOUT)
        response.raise_for_status()
        answer = response.json()
        if "error" in answer:
            raise MediaWikiError(f"{params.get('action')}: {answer['error']}")
        return answer

    def _login(self) -> None:
        token = self.call(action="query", meta="tokens",
                          type="login")["query"]["tokens"]["logintoken"]
        answer = self.call("POST", action="clientlogin", username=ADMIN, password=PASSWORD,
                           logintoken=token, loginreturnurl=self.server)
        if answer["clientlogin"]["status"] != "PASS":
            raise MediaWikiError(f"login: {answer['clientlogin']}")
        self._csrf = self.call(action="query", meta="tokens")["query"]["tokens"]["csrftoken"]

    def edit(self, title: str, text: str, summary: str = "test edit") -> dict:
        return self.call("POST", action="edit", title=title, text=text, summary=summary,
                         bot="1", token=self._csrf)["edit"]

    def upload(self, name: str, data: bytes, comment: str = "test upload") -> dict:
        """Upload (or re-upload over) `name`; MediaWiki's duplicate warnings are ignored."""
        answer = self.call("POST", files={"file": (name, data)}, action="upload",
                           filename=name, comment=comment, ignorewarnings="1",
                           token=self._csrf)["upload"]
        if answer.get("result") != "Success":
            raise MediaWikiError(f"upload {name}: {answer}")
        return answer

    def delete(self, title: str, reason: str = "test deletion") -> dict:
        return self.call("POST", action="delete", title=title, reason=reason,
                         token=self._csrf)["delete"]

    def move(self, title: str, to: str, *, redirect: bool = True) -> dict:
        params = {} if redirect else {"noredirect": "1"}
        return self.call("POST", action="move", **{"from": title}, to=to, reason="test move",
                         token=self._csrf, **params)["move"]

    # -- its database ----------------------------------------------------------------------

    def sql(self, query: str, args: tuple = ()) -> list[tuple]:
        """Rows from the wiki's own SQLite database (read-only)."""
        conn = sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=30)
        try:
            return [tuple(_text(v) for v in row) for row in conn.execute(query, args)]
        finally:
            conn.close()


def _text(value: object) -> object:
    return value.decode() if isinstance(value, bytes) else value


def available() -> str | None:
    """Why a real MediaWiki cannot run here (None when it can)."""
    if not (MEDIAWIKI / "maintenance" / "install.php").is_file():
        return f"no MediaWiki at {MEDIAWIKI} (ops/install-deps installs Debian's)"
    for binary in ("php", "/usr/bin/convert", "rsvg-convert"):
        if shutil.which(binary) is None:
            return f"{binary} not found (ops/install-deps installs it)"
    return None
