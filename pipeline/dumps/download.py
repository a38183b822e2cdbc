"""Bringing a dump run's files here: resumable, verified, polite.

One connection at a time (one `requests.Session`, serial), the project's User-Agent, waits as
long as Retry-After says on 429/503, resumes a cut transfer with an HTTP Range request from the
bytes already on disk, and checks every file against the run's checksum list before it is
used. A file already here and verified is not fetched again. `open_run` turns any SOURCE (a
directory, a run URL, `latest`) into a run whose files are local and verified.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import requests

from pipeline.dumps import source
from pipeline.dumps.source import Checksum, DumpRun
from pipeline.errors import DumpError
from pipeline.politeness import check_user_agent, retry_after

log = logging.getLogger(__name__)

CHUNK = 1 << 16  # bytes read from the socket, and hashed, at a time


@dataclass
class Transfer:
    """Progress of one download, for a progress line."""

    name: str
    done: int  # bytes on disk
    total: int | None
    rate: float  # bytes/s over this transfer
    eta: float | None  # seconds

    def line(self) -> str:
        total = f"/{self.total / 1e6:,.1f}" if self.total else ""
        eta = f", ETA {_duration(self.eta)}" if self.eta is not None else ""
        return (f"{self.name}: {self.done / 1e6:,.1f}{total} MB at"
                f" {self.rate / 1e6:,.2f} MB/s{eta}")


class Downloader:
    """Serial downloads over one session."""

    def __init__(self, user_agent: str, *, timeout: float = 60.0, max_attempts: int = 10,
                 progress: Callable[[Transfer], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep, every: float = 1.0,
                 chunk: int = CHUNK) -> None:
        self.user_agent = user_agent
        self.timeout = timeout
        self.max_attempts = max_attempts  # tries of one file or page before giving up
        self._progress = progress or (lambda transfer: None)
        self._sleep = sleep
        self._every = every  # seconds between progress reports
        self._chunk = chunk  # bytes per read: a cut transfer loses at most this much
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.headers["User-Agent"] = user_agent
        self.requests = 0

    def _get(self, url: str, **kwargs) -> requests.Response:
        check_user_agent(self.user_agent, url)
        self.requests += 1
        return self.session.get(url, timeout=self.timeout, **kwargs)

    def text(self, url: str, *, missing_ok: bool = False) -> str | None:
        """A small file's text; None for a 404 when `missing_ok`."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self._get(url)
            except requests.RequestException as exc:
                self._wait(attempt, f"{url}: {type(exc).__name__}", min(60.0, 2.0 ** attempt))
                continue
            if response.status_code in (429, 503):
                self._wait(attempt, f"{url}: HTTP {response.status_code}",
                           retry_after(response.headers.get("Retry-After"), 5.0))
                continue
            if response.status_code == 404 and missing_ok:
                return None
            if response.status_code != 200:
                raise DumpError(f"{url}: HTTP {response.status_code}")
            return response.text
        raise AssertionError("unreachable")

    def _wait(self, attempt: int, why: str, seconds: float) -> None:
        if attempt >= self.max_attempts:
            raise DumpError(f"{why}, {attempt} tries: giving up")
        log.warning("%s; trying again in %.0f s", why, seconds)
        self._sleep(seconds)

    def fetch(self, url: str, dest: Path, expected: Checksum) -> Path:
        """`url` into `dest`, verified; resumes from `dest`.part, skips a verified `dest`."""
        if dest.exists():
            if digest(dest, expected.algorithm) == expected.hexdigest:
                return dest
            dest.unlink()
        part = dest.with_name(dest.name + ".part")
        dest.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        start_size = part.stat().st_size if part.exists() else 0
        attempt = 0
        while True:
            attempt += 1
            offset = part.stat().st_size if part.exists() else 0
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            try:
                with self._get(url, headers=headers, stream=True) as response:
                    status = response.status_code
                    if status in (429, 503):
                        self._wait(attempt, f"{url}: HTTP {status}",
                                   retry_after(response.headers.get("Retry-After"), 5.0))
                        continue
                    if status == 416 and offset:
                        break  # nothing left past what we hold
                    if status not in (200, 206):
                        raise DumpError(f"{url}: HTTP {status}")
                    if status == 200 or not _range_starts_at(response, offset):
                        offset = 0  # the server sent the whole file
                    total = _total(response, offset)
                    with open(part, "r+b" if offset else "wb") as out:
                        out.seek(offset)
                        out.truncate()
                        done = offset
                        last = 0.0
                        for chunk in response.iter_content(self._chunk):
                            out.write(chunk)
                            done += len(chunk)
                            now = time.monotonic()
                            if now - last >= self._every:
                                last = now
                                self._report(dest.name, done, total, done - start_size,
                                             now - started)
                    if total is not None and done < total:
                        raise requests.ConnectionError(f"{total - done} bytes short")
                    break
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError) as exc:
                self._wait(attempt, f"{dest.name}: transfer cut ({exc!s:.80})",
                           min(60.0, 2.0 ** min(attempt, 6)))
        size = part.stat().st_size
        self._report(dest.name, size, size, size - start_size, time.monotonic() - started)
        found = digest(part, expected.algorithm)
        if found != expected.hexdigest:
            part.unlink()
            raise DumpError(f"{dest.name}: {expected.algorithm} checksum mismatch (got {found},"
                            f" the run's list says {expected.hexdigest})")
        part.rename(dest)
        return dest

    def _report(self, name: str, done: int, total: int | None, fetched: int,
                elapsed: float) -> None:
        rate = fetched / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if total and rate > 0 else None
        self._progress(Transfer(name, done, total, rate, eta))


def _range_starts_at(response: requests.Response, offset: int) -> bool:
    content_range = response.headers.get("Content-Range", "")
    return content_range.startswith(f"bytes {offset}-")


def _total(response: requests.Response, offset: int) -> int | None:
    content_range = response.headers.get("Content-Range", "")
    if "/" in content_range and content_range.rsplit("/", 1)[1].isdigit():
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return offset + int(length) if length and length.isdigit() else None


def digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s // 60 % 60:02d}m{s % 60:02d}s"


# -- SOURCE -> a run with local, verified files ------------------------------------------------

def open_run(spec: str, *, dbname: str, dumps_url: str, dumps_dir: Path,
             downloader: Downloader) -> tuple[DumpRun, dict[str, Path]]:
    """The run SOURCE names, and its tables' verified local files.

    SOURCE is a directory, the URL of one run, or `latest` (the newest run under `dumps_url`
    whose tables are all dumped). `dbname` is the wiki's database name: a run of another wiki
    is refused before anything is downloaded.
    """
    if spec == "latest":
        run = latest_run(dumps_url, dbname, downloader)
    elif spec.startswith(("http://", "https://")):
        name, date, url = source.run_from_url(spec)
        run = _remote_run(name, date, url, downloader)
    else:
        return _local_run(Path(spec), dbname)
    _same_wiki(run, dbname)
    pending = run.incomplete()
    if pending:
        raise DumpError(f"{run.name}: not finished yet ({', '.join(pending)} not done)")
    here = dumps_dir / run.dbname / run.date
    files = {}
    for table in run.tables():
        name = run.file_name(table)
        if name not in run.checksums:
            raise DumpError(f"{run.name}: {name} is not in the run's checksum list")
        files[table] = downloader.fetch(urljoin(run.location, name), here / name,
                                        run.checksums[name])
    return run, files


def latest_run(dumps_url: str, dbname: str, downloader: Downloader, *, tries: int = 6
               ) -> DumpRun:
    """The newest run of `dbname` under `dumps_url` whose tables are all dumped."""
    base = dumps_url.rstrip("/") + f"/{dbname}/"
    listing = downloader.text(base)
    for date in source.run_dates(listing or "")[:tries]:
        run = _remote_run(dbname, date, f"{base}{date}/", downloader, missing_ok=True)
        if run is not None and run.status and not run.incomplete():
            return run
    raise DumpError(f"{base}: no complete run among the newest {tries}")


def _remote_run(dbname: str, date: str, url: str, downloader: Downloader, *,
                missing_ok: bool = False) -> DumpRun | None:
    run = DumpRun(dbname, date, url)
    text = downloader.text(url + "dumpstatus.json", missing_ok=missing_ok)
    if text is None:
        return None
    run.status = source.parse_status(text, url)
    for algorithm in ("sha1", "md5"):
        sums = downloader.text(url + run.file_name(f"{algorithm}sums"), missing_ok=True)
        if sums:
            run.checksums = source.parse_checksums(sums, algorithm)
            break
    if not run.checksums:
        raise DumpError(f"{url}: no sha1sums or md5sums list")
    return run


def _local_run(directory: Path, dbname: str) -> tuple[DumpRun, dict[str, Path]]:
    if not directory.is_dir():
        raise DumpError(f"{directory}: not a directory, a dump run URL or 'latest'")
    name, date = source.run_from_names([p.name for p in directory.iterdir()], str(directory))
    run = DumpRun(name, date, str(directory))
    _same_wiki(run, dbname)
    status = directory / "dumpstatus.json"
    if not status.exists():
        raise DumpError(f"{directory}: no dumpstatus.json, so the dump's time is unknown")
    run.status = source.parse_status(status.read_text(), str(directory))
    for algorithm in ("sha1", "md5"):
        sums = directory / run.file_name(f"{algorithm}sums")
        if sums.exists():
            run.checksums = source.parse_checksums(sums.read_text(), algorithm)
            break
    if not run.checksums:
        raise DumpError(f"{directory}: no {run.file_name('sha1sums')} to verify the files with")
    files = {}
    for table in run.tables():
        path = directory / run.file_name(table)
        expected = run.checksums.get(path.name)
        if expected is None or not path.exists():
            raise DumpError(f"{path}: missing, or not in the run's checksum list")
        found = digest(path, expected.algorithm)
        if found != expected.hexdigest:
            raise DumpError(f"{path.name}: {expected.algorithm} checksum mismatch (got {found},"
                            f" the run's list says {expected.hexdigest})")
        files[table] = path
    return run, files


def _same_wiki(run: DumpRun, dbname: str) -> None:
    if run.dbname != dbname:
        raise DumpError(f"{run.name} is a dump of {run.dbname}, but the wiki is {dbname}")
