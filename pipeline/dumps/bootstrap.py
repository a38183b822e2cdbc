"""The crawl from dumps: the wiki's tables from a dump run, the rest from the API.

    1. check: the run is of this wiki (dbname = siteinfo's wikiid), the ledger holds no other
       crawl (unless replacing), the files are here and verified (`download.open_run`);
    2. load: the tables into staging and then into articles, usages and titles, one
       transaction (`loader.load`); checkpointed under crawl_state "dumps";
    3. imageinfo: the distinct titles in order, 50 a request, into `files` as the walk writes
       them (pending, missing, unsupported, failed), checkpointed after each step, the pending
       ones sent to the workers as they come;
    4. swap in: pages and usages become the dump's in one transaction, the walk is recorded as
       complete and the dump's time becomes the change feed's cursor (`last_crawl`), so the next
       `wikihash recrawl` applies what changed after the dump.
A run killed at any step resumes at that step when started again with the same SOURCE.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline import ledger, wikiowner
from pipeline.dumps import loader
from pipeline.dumps.download import Downloader, open_run
from pipeline.dumps.mysqldump import Progress
from pipeline.errors import DumpError
from pipeline.producer import LAST_CRAWL, WALK, Producer, site_facts
from pipeline.recrawl import RECRAWL

log = logging.getLogger(__name__)

DUMPS = "dumps"  # crawl_state key: the crawl from dumps, its run and stage
TITLES_PER_STEP = 500  # titles per imageinfo step (10 requests), one transaction each


@dataclass
class Report:
    run: str = ""
    schema: str = ""
    dump_time: str = ""
    rows: int = 0
    articles: int = 0
    usages: int = 0
    titles: int = 0
    files_looked_up: int = 0
    seconds_loading: float = 0.0
    resumed: str | None = None

    def summary(self) -> str:
        return (f"bootstrapped from {self.run} ({self.schema} schema, dumped by"
                f" {self.dump_time}): {self.rows:,} rows read in {self.seconds_loading:.1f} s,"
                f" {self.articles:,} articles, {self.usages:,} usages, {self.titles:,} files,"
                f" {self.files_looked_up:,} looked up through the API")


def crawl_from_dumps(producer: Producer, spec: str, *, user_agent: str, dumps_url: str,
                     dumps_dir: Path, replace: bool = False,
                     say: Callable[[str], None] = log.info) -> Report:
    """Bootstrap the ledger behind `producer` from the dump run SOURCE `spec` (see module doc)."""
    conn, wiki = producer.conn, producer.wiki
    info = wiki.siteinfo()
    dbname = info.get("wikiid")
    if not dbname:
        raise DumpError(f"{wiki.api_url} does not say its database name (siteinfo wikiid)")
    with conn:
        wikiowner.check(conn, info, wiki.api_url)  # --replace is for this wiki's crawl only
        ledger.set_wiki_info(conn, site_facts(info, wiki.api_url))
        state = ledger.get_state(conn, DUMPS)
        walk = ledger.get_state(conn, WALK)
    downloader = Downloader(user_agent, progress=lambda t: say(t.line()))
    run, files = open_run(spec, dbname=dbname, dumps_url=dumps_url, dumps_dir=dumps_dir,
                          downloader=downloader)
    report = Report(run=run.name, dump_time=run.dump_time())
    if isinstance(state, dict) and state.get("run") == run.name:
        report.resumed = state["stage"]
        report.schema = state.get("schema", "")
        if state["stage"] == "done":
            say(f"the ledger was bootstrapped from {run.name} already")
            return report
    else:
        _refuse_other_crawl(state, walk, replace, run.name)
        state = _load(producer, run.name, report, files, say)
    if state["stage"] == "imageinfo":
        state = _imageinfo(producer, state, report, say)
    _swap_in(producer, state, report)
    return report


def _refuse_other_crawl(state: object, walk: object, replace: bool, run: str) -> None:
    if replace or (state is None and walk is None):
        return
    if isinstance(state, dict):
        held = f"a crawl from the dump {state.get('run')} ({state.get('stage')})"
    else:
        held = "a walk" + (" (complete)" if isinstance(walk, dict) and walk.get("done")
                           else " (in progress)")
    raise DumpError(f"the ledger already holds {held}: give --replace to replace it with {run},"
                    " or use `wikihash recrawl` to bring it up to date")


def _load(producer: Producer, run: str, report: Report, files: dict[str, Path],
          say: Callable[[str], None]) -> dict:
    started = time.monotonic()
    last = [0.0]

    def progress(name: str, counted: Progress) -> None:
        now = time.monotonic()
        if now - last[0] >= 2.0:
            last[0] = now
            rate = counted.rows / max(1e-9, now - started)
            say(f"{name}: {counted.rows:,} rows, {counted.bytes / 1e6:,.0f} MB read"
                f" ({rate:,.0f} rows/s)")

    conn = producer.conn
    with conn:
        loaded = loader.load(conn, files, progress)
        state = {"run": run, "stage": "imageinfo", "after": "", "schema": loaded.schema,
                 "time": report.dump_time, "articles": loaded.articles,
                 "usages": loaded.usages, "titles": loaded.titles}
        ledger.set_state(conn, DUMPS, state)
    report.seconds_loading = time.monotonic() - started
    report.rows = sum(loaded.rows.values())
    report.schema = loaded.schema
    say(f"loaded {run}: {report.rows:,} rows in {report.seconds_loading:.1f} s;"
        f" {loaded.articles:,} articles, {loaded.usages:,} usages, {loaded.titles:,} files")
    return state


def _imageinfo(producer: Producer, state: dict, report: Report,
               say: Callable[[str], None]) -> dict:
    """Every distinct title into `files`, as the walk would write it, step by step."""
    conn, wiki = producer.conn, producer.wiki
    total = state.get("titles", 0)
    done = 0
    started = time.monotonic()
    while True:
        with conn:
            titles = loader.titles_after(conn, state["after"], TITLES_PER_STEP)
        if not titles:
            break
        infos = wiki.file_info(titles, producer.thumb_width)
        with conn:
            ledger.insert_files(conn, infos)
            ledger.refresh_files(conn, infos)  # known files (with --replace) get today's facts
            state = {**state, "after": titles[-1]}
            ledger.set_state(conn, DUMPS, state)
        done += len(titles)
        report.files_looked_up += len(titles)
        producer.dispatch()
        rate = done / max(1e-9, time.monotonic() - started)
        say(f"imageinfo: {done:,} of {total:,} files this run ({rate:,.0f} files/s)")
    return {**state, "stage": "swap"}


def _swap_in(producer: Producer, state: dict, report: Report) -> None:
    conn = producer.conn
    with conn:
        loader.swap_in(conn)
        ledger.set_state(conn, WALK, {"continue": None, "started": state["time"], "done": True,
                                      "from_dumps": state["run"]})
        ledger.set_state(conn, LAST_CRAWL, state["time"])
        with conn.cursor() as cur:  # a re-crawl in progress was of the ledger replaced
            cur.execute("DELETE FROM crawl_state WHERE key = %s", (RECRAWL,))
        ledger.set_state(conn, DUMPS, {**state, "stage": "done"})
    report.articles = state.get("articles", 0)
    report.usages = state.get("usages", 0)
    report.titles = state.get("titles", 0)
    producer.dispatch()
