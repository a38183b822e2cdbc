"""Where a dump run is, and what it holds: files, checksums, job status, the dump's time.

A run is one directory of Wikimedia's dump server, `{base}/{dbname}/{date}/`, or a local copy
of one: `{dbname}-{date}-{table}.sql.gz` files, the checksum lists `{dbname}-{date}-sha1sums.txt`
and `-md5sums.txt`, and `dumpstatus.json` (each job's status, files and last update). The
parsing here is pure; reading and fetching is left to the caller (`download`, `bootstrap`).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field

from pipeline.errors import DumpError

TABLES = ("page", "imagelinks", "linktarget")  # linktarget: only with the newer schema
REQUIRED = ("page", "imagelinks")
_RUN_PATH = re.compile(r"/(\w+)/(\d{8})/?$")
_DATE_LINK = re.compile(r'href="(?:\./)?(\d{8})/?"')


@dataclass(frozen=True)
class Checksum:
    algorithm: str  # 'sha1' or 'md5'
    hexdigest: str


@dataclass
class DumpRun:
    """One dump run: where it is, and the facts its status file and checksum lists give."""

    dbname: str
    date: str  # YYYYMMDD
    location: str  # a directory, or a URL ending in '/'
    status: dict = field(default_factory=dict)
    checksums: dict[str, Checksum] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.dbname}-{self.date}"

    def file_name(self, what: str) -> str:
        suffix = f"{what}.txt" if what.endswith("sums") else f"{what}.sql.gz"
        return f"{self.name}-{suffix}"

    def tables(self) -> list[str]:
        """The tables this run offers of those we read (the required ones must be there)."""
        found = [t for t in TABLES if self.file_name(t) in self.checksums
                 or self.job_of(self.file_name(t)) is not None]
        missing = [t for t in REQUIRED if t not in found]
        if missing:
            raise DumpError(f"{self.name}: no {' or '.join(missing)} dump in the run")
        return found

    def job_of(self, file_name: str) -> tuple[str, dict] | None:
        for name, job in (self.status.get("jobs") or {}).items():
            if file_name in (job.get("files") or {}):
                return name, job
        return None

    def incomplete(self) -> list[str]:
        """The files we need whose job is not done yet."""
        pending = []
        for table in self.tables():
            found = self.job_of(self.file_name(table))
            if found is None or found[1].get("status") != "done":
                pending.append(self.file_name(table))
        return pending

    def dump_time(self) -> str:
        """A time no later than the moment the first table we read was taken (ISO 8601, Z).

        A table's job records only when it ended (`updated`). Jobs run one after another, so a
        table was taken after every job that had ended before its own: the latest such end is
        the time, or the run's date at midnight when no job ended before. Changes between that
        time and the tables are applied again by the re-crawl, which is harmless (it applies the
        current state).
        """
        ends = {}
        for name, job in (self.status.get("jobs") or {}).items():
            if job.get("updated"):
                ends[name] = _parse_time(job["updated"])
        used = [self.job_of(self.file_name(t)) for t in self.tables()]
        used_names = {u[0] for u in used if u is not None}
        first = min((ends[n] for n in used_names if n in ends), default=None)
        start = dt.datetime.strptime(self.date, "%Y%m%d").replace(tzinfo=dt.UTC)
        before = [t for n, t in ends.items() if n not in used_names and first is not None
                  and t < first]
        when = max([start, *before])
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_checksums(text: str, algorithm: str) -> dict[str, Checksum]:
    """`sha1sum`/`md5sum` output: 'HEX  NAME' lines."""
    found = {}
    size = {"sha1": 40, "md5": 32}[algorithm]
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and len(parts[0]) == size:
            found[parts[1].lstrip("*")] = Checksum(algorithm, parts[0].lower())
    return found


def parse_status(text: str, where: str) -> dict:
    try:
        status = json.loads(text)
    except ValueError:
        raise DumpError(f"{where}: dumpstatus.json is not JSON") from None
    if not isinstance(status, dict) or not isinstance(status.get("jobs"), dict):
        raise DumpError(f"{where}: dumpstatus.json has no jobs")
    return status


def run_from_names(names: list[str], location: str) -> tuple[str, str]:
    """(dbname, date) of the run whose page dump is among `names` (a directory's listing)."""
    runs = sorted({m.groups() for n in names
                   if (m := re.fullmatch(r"(\w+?)-(\d{8})-page\.sql\.gz", n))})
    if not runs:
        raise DumpError(f"{location}: no *-YYYYMMDD-page.sql.gz file")
    if len(runs) > 1:
        names = ", ".join("-".join(r) for r in runs)
        raise DumpError(f"{location}: dumps of several runs ({names})")
    return runs[0]


def run_from_url(url: str) -> tuple[str, str, str]:
    """(dbname, date, url ending in '/') of a run URL such as .../enwiki/20261201/."""
    match = _RUN_PATH.search(url.split("?")[0])
    if not match:
        raise DumpError(f"{url}: not a dump run URL (…/DBNAME/YYYYMMDD/)")
    return match.group(1), match.group(2), url.rstrip("/") + "/"


def run_dates(listing: str) -> list[str]:
    """The run dates in a wiki's directory listing, newest first."""
    return sorted(set(_DATE_LINK.findall(listing)), reverse=True)


def _parse_time(value: str) -> dt.datetime:
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return dt.datetime.strptime(value, fmt).replace(tzinfo=dt.UTC)
        except ValueError:
            continue
    raise DumpError(f"dumpstatus.json: a time we cannot read: {value!r}")
