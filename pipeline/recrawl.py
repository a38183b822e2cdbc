"""The re-crawl: bring the ledger up to date with what changed on the wiki since the last crawl.

Cost follows the changes, not the wiki: the change feed (`list=recentchanges`) names what
changed; each named article and file is then looked up as it is *now* and written as such.
Applying the current state instead of replaying events makes every step idempotent, so a
re-crawl killed mid-way and started again ends in the same state.

Stages, each checkpointed in `crawl_state` under "recrawl" (a `Checkpoint`):
  feed    the wiki's own feed: edits, new pages, deletions and restores, moves, file uploads,
          overwrites, reverts and deletions;
  shared  each shared file repository's upload and deletion log (Commons changes never show
          in Wikipedia's feed), through the repository's own API, for files in the ledger;
  walk    the fallback when the feed no longer reaches back to the last crawl (or has a gap):
          a walk of revision ids that re-reads only the articles whose revision changed,
          then a look at every known file.
Then new pending files are sent to the workers, as the crawl does.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from pipeline import ledger, timestamps, wikiowner
from pipeline.errors import WikihashError
from pipeline.ledger import LAST_CRAWL, RECRAWL
from pipeline.storage import Connection, transaction
from pipeline.wiki import TEMPLATE_NAMESPACES, Article, Wiki, strip_namespace

log = logging.getLogger(__name__)

FILE_NS = 6
Stage = Literal["feed", "shared", "walk", "done"]


@dataclass(frozen=True)
class Checkpoint:
    """Where a re-crawl is: the state machine feed -> shared -> done, or walk -> done.

    Stored as JSON in `crawl_state` after every step, so a killed re-crawl resumes here.
    """

    since: str  # changes from this time (wiki time, `timestamps.FORMAT`)...
    until: str  # ...to this one
    stage: Stage = "feed"
    cont: dict | None = None  # the API's continuation within the stage's current feed
    done: bool = False
    repos_done: tuple[str, ...] = ()  # shared stage: "repo" and "repo:logtype" finished
    feed_key: str | None = None  # shared stage: the "repo:logtype" that `cont` belongs to
    walk_started: str | None = None  # walk stage: pages not seen since then are gone

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "repos_done": list(self.repos_done)}

    @classmethod
    def from_json(cls, value: object) -> Checkpoint | None:
        """The checkpoint stored as `value`; None for anything that is not one."""
        if not isinstance(value, dict) or not {"since", "until", "stage"} <= value.keys():
            return None
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in value.items() if k in known}
        fields["repos_done"] = tuple(fields.get("repos_done") or ())
        return cls(**fields)

    def advance(self, **changes: object) -> Checkpoint:
        return dataclasses.replace(self, **changes)


@dataclass
class Report:
    """What a re-crawl changed (or, with --dry-run, would change)."""

    mode: str = "feed"
    since: str = ""
    until: str = ""
    pages_added: list[str] = field(default_factory=list)
    pages_updated: list[str] = field(default_factory=list)
    pages_removed: list[str] = field(default_factory=list)
    files_changed: list[str] = field(default_factory=list)
    new_files: int = 0
    changes_read: int = 0

    def summary(self) -> str:
        return (f"{self.mode} from {self.since} to {self.until}: {self.changes_read} changes"
                f" read; articles +{len(self.pages_added)} ~{len(self.pages_updated)}"
                f" -{len(self.pages_removed)}; files changed {len(self.files_changed)},"
                f" new {self.new_files}")


class Recrawler:
    """Updates the ledger at `conn` from `wiki`'s changes since the last crawl; a shared file
    repository's log is read through `shared_wiki(api_url)`."""

    def __init__(self, wiki: Wiki, conn: Connection, *, thumb_width: int,
                 feed_max_age: dt.timedelta, shared_wiki: Callable[[str], Wiki]) -> None:
        self.wiki = wiki
        self.conn = conn
        self.thumb_width = thumb_width
        self.feed_max_age = feed_max_age  # how far back the wiki's change feed reaches
        self._shared_wiki = shared_wiki
        self.report = Report()

    # -- driving ---------------------------------------------------------------------------

    def run(self, *, since: str | None = None, dry_run: bool = False) -> Report:
        """Apply every change since `since` (default: the last completed crawl)."""
        with transaction(self.conn):
            state = Checkpoint.from_json(ledger.get_state(self.conn, RECRAWL))
            if dry_run or since or state is None or state.done:
                state = self._new_state(since)
        self.report.since, self.report.until = state.since, state.until
        try:
            if state.stage == "feed":
                state = self._feed(state, dry_run)
            if state.stage == "shared":
                state = self._shared(state, dry_run)
            if state.stage == "walk":
                state = self._walk(state, dry_run)
            if not dry_run:
                with transaction(self.conn):
                    ledger.set_state(self.conn, LAST_CRAWL, state.until)
                    ledger.set_state(self.conn, RECRAWL, state.advance(done=True).to_json())
        finally:
            if dry_run:
                self.conn.rollback()
        return self.report

    def _new_state(self, since: str | None) -> Checkpoint:
        if since is None:
            since = ledger.get_state(self.conn, LAST_CRAWL)
        if not since:
            raise WikihashError("no completed crawl to update: run `wikihash crawl` first, "
                                "or give --since")
        info = self.wiki.siteinfo()
        wikiowner.check(self.conn, info, self.wiki.api_url)
        until = info.get("time") or timestamps.now()
        stage: Stage = "feed"
        if timestamps.parse(until) - timestamps.parse(since) > self.feed_max_age:
            log.info("the last crawl (%s) is older than the change feed keeps", since)
            stage = "walk"
        else:
            oldest = self.wiki.oldest_change()
            if oldest is not None and timestamps.parse(oldest) > timestamps.parse(since):
                log.info("the change feed starts at %s, after %s: a gap", oldest, since)
                stage = "walk"
        self.report.mode = "feed" if stage == "feed" else "walk"
        return Checkpoint(since=since, until=until, stage=stage)

    def _step_done(self, state: Checkpoint, dry_run: bool) -> None:
        """End a step: checkpoint and commit it, or under --dry-run keep it in the one open
        transaction."""
        if not dry_run:
            with transaction(self.conn):
                ledger.set_state(self.conn, RECRAWL, state.to_json())

    # -- stage: the wiki's own change feed -------------------------------------------------

    def _feed(self, state: Checkpoint, dry_run: bool) -> Checkpoint:
        for rows, cont in self.wiki.changes(state.since, state.until, state.cont):
            self.report.changes_read += len(rows)
            titles, ids, files = _affected(rows)
            self._apply_pages(titles, ids)
            self._apply_files(files)
            # A template's edit changes its articles' images without a revision of theirs.
            for batch in self.wiki.transcluded_by(_templates(rows)):
                self._apply_pages(set(), set(batch))
            state = state.advance(cont=cont) if cont else state.advance(stage="shared",
                                                                        cont=None)
            self._step_done(state, dry_run)
        return state

    # -- stage: shared repositories --------------------------------------------------------

    def _shared(self, state: Checkpoint, dry_run: bool) -> Checkpoint:
        repos = [r for r in self.wiki.file_repos() if not r.get("local") and r.get("apiurl")]
        done = set(state.repos_done)
        for repo in repos:
            if repo["name"] in done:
                continue
            shared = self._shared_wiki(repo["apiurl"])
            for letype in ("upload", "delete"):
                key = f"{repo['name']}:{letype}"
                if key in done:
                    continue
                start = state.cont if state.feed_key == key else None
                for rows, cont in shared.log_events(letype, state.since, state.until, start):
                    self.report.changes_read += len(rows)
                    titles = {strip_namespace(r["title"]) for r in rows
                              if r.get("ns") == FILE_NS and r.get("title")}
                    self._apply_files(titles, repo=repo["name"])
                    state = state.advance(feed_key=key, cont=cont)
                    self._step_done(state, dry_run)
                done.add(key)
                state = state.advance(repos_done=tuple(sorted(done)), feed_key=None, cont=None)
            done.add(repo["name"])
        return state.advance(stage="done", cont=None)

    # -- stage: the fallback walk ----------------------------------------------------------

    def _walk(self, state: Checkpoint, dry_run: bool) -> Checkpoint:
        state = state.advance(walk_started=state.walk_started or ledger.database_now(self.conn))
        for articles, cont in self.wiki.walk_revisions(state.cont):
            known = ledger.page_revisions(self.conn, [a.page_id for a in articles])
            changed = [a.page_id for a in articles if known.get(a.page_id) != a.rev_id
                       or _touched_since(a, state.since)]
            ledger.mark_pages_seen(self.conn, [a.page_id for a in articles])
            self._apply_pages(set(), set(changed))
            state = state.advance(cont=cont)
            self._step_done(state, dry_run)
        self.report.pages_removed += ledger.delete_pages_unseen_since(self.conn,
                                                                      state.walk_started)
        # Files may have changed anywhere; without a feed, look at each one once.
        for titles in ledger.file_titles(self.conn, batch=500):
            self._apply_files(titles)
        state = state.advance(stage="done", cont=None)
        self._step_done(state, dry_run)
        return state

    # -- applying the current state --------------------------------------------------------

    def _apply_pages(self, titles: set[str], page_ids: set[int]) -> None:
        if not titles and not page_ids:
            return
        lookup = self.wiki.pages(titles=sorted(titles), page_ids=sorted(page_ids))
        articles: list[Article] = lookup.articles
        known = ledger.page_revisions(self.conn, [a.page_id for a in articles])
        for article in articles:
            if article.page_id not in known:
                self.report.pages_added.append(article.title)
            elif known[article.page_id] != article.rev_id:
                self.report.pages_updated.append(article.title)
        new = ledger.unknown_files(self.conn, [t for a in articles for t in a.images])
        infos = self.wiki.file_info(new, self.thumb_width) if new else []
        self.report.new_files += len(infos)
        ledger.upsert_pages(self.conn, articles)
        ledger.insert_files(self.conn, infos)
        ledger.set_usages(self.conn, articles)
        self.report.pages_removed += ledger.delete_pages(
            self.conn, page_ids=lookup.gone_ids, titles=lookup.gone_titles,
            keep=[a.page_id for a in articles])

    def _apply_files(self, titles: Iterable[str], *, repo: str | None = None) -> None:
        known = ledger.known_files(self.conn, titles, repo=repo)
        if not known:
            return
        # An API error is no news about the file: keep what the ledger has.
        infos = [i for i in self.wiki.file_info(known, self.thumb_width)
                 if not (i.state == "failed" and i.sha1 is None)]
        self.report.files_changed += ledger.refresh_files(self.conn, infos)


def _affected(rows: list[dict]) -> tuple[set[str], set[int], set[str]]:
    """Article titles, article ids and file titles named by a page of the change feed."""
    titles: set[str] = set()
    ids: set[int] = set()
    files: set[str] = set()
    for row in rows:
        ns, title = row.get("ns"), row.get("title", "")
        if row.get("type") == "log":
            params = row.get("logparams") or {}
            if ns == 0:
                titles.add(title)
                if row.get("logtype") == "move" and params.get("target_ns", 0) == 0:
                    titles.add(params.get("target_title", ""))
                if row.get("pageid"):
                    ids.add(int(row["pageid"]))
            elif ns == FILE_NS and row.get("logtype") in ("upload", "delete", "move"):
                files.add(strip_namespace(title))
                if row.get("logtype") == "move":
                    files.add(strip_namespace(params.get("target_title", "")))
        elif ns == 0 and row.get("pageid"):
            ids.add(int(row["pageid"]))
    titles.discard("")
    files.discard("")
    return titles, ids, files


def _templates(rows: list[dict]) -> set[str]:
    """Templates and modules named by a page of the change feed (edited, created, deleted,
    restored, moved): the articles that transclude them may show other images now."""
    return {row["title"] for row in rows
            if row.get("ns") in TEMPLATE_NAMESPACES and row.get("title")}


def _touched_since(article: Article, since: str) -> bool:
    """The article's page_touched moved after `since` (a template it uses was edited)."""
    return bool(article.touched) and timestamps.parse(article.touched) > timestamps.parse(since)


def wait_for_first_crawl(url: str, stopping: threading.Event, say: Callable[[str], None],
                         poll: float = 10.0) -> bool:
    """Wait until a first crawl has completed its walk, saying so (through `say`) every
    minute; False if `stopping` is set first."""
    import time

    from pipeline import storage
    from pipeline.ledger import WALK

    said: float | None = None
    while not stopping.is_set():
        try:
            with storage.connection(url) as conn:
                if ledger.get_state(conn, LAST_CRAWL):
                    return True
                why = "walk " + ("in progress" if ledger.get_state(conn, WALK) else "not started")
        except WikihashError as exc:
            why = str(exc)
        if said is None or time.monotonic() - said >= 60:
            say(f"waiting for the first crawl to complete before re-crawling ({why})")
            said = time.monotonic()
        stopping.wait(poll)
    return False
