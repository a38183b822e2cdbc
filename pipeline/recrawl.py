"""The re-crawl: bring the ledger up to date with what changed on the wiki since the last crawl.

Cost follows the changes, not the wiki: the change feed (`list=recentchanges`) names what
changed; each named article and file is then looked up as it is *now* and written as such.
Applying the current state instead of replaying events makes every step idempotent, so a
re-crawl killed mid-way and started again ends in the same state.

Stages, each checkpointed in `crawl_state` under "recrawl":
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

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from pipeline import ledger, wikiowner
from pipeline.errors import WikihashError
from pipeline.producer import LAST_CRAWL
from pipeline.storage import Connection
from pipeline.wiki import Article, Wiki, strip_namespace

log = logging.getLogger(__name__)

RECRAWL = "recrawl"  # crawl_state key: the re-crawl in progress
FILE_NS = 6


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
    """Updates the ledger at `conn` from `wiki`'s changes since the last crawl."""

    def __init__(self, wiki: Wiki, conn: Connection, *, thumb_width: int,
                 feed_max_age: dt.timedelta,
                 shared_wiki: Callable[[str], Wiki] | None = None) -> None:
        self.wiki = wiki
        self.conn = conn
        self.thumb_width = thumb_width
        self.feed_max_age = feed_max_age  # how far back the wiki's change feed reaches
        self._shared_wiki = shared_wiki or (lambda api_url: Wiki(api_url, "wikihash"))
        self.report = Report()

    # -- driving ---------------------------------------------------------------------------

    def run(self, *, since: str | None = None, dry_run: bool = False) -> Report:
        """Apply every change since `since` (default: the last completed crawl)."""
        with self.conn:
            state = ledger.get_state(self.conn, RECRAWL)
            if dry_run or since or not isinstance(state, dict) or state.get("done"):
                state = self._new_state(since)
        self.report.since, self.report.until = state["since"], state["until"]
        try:
            if state["stage"] == "feed":
                state = self._feed(state, dry_run)
            if state["stage"] == "shared":
                state = self._shared(state, dry_run)
            if state["stage"] == "walk":
                state = self._walk(state, dry_run)
            if not dry_run:
                with self.conn:
                    ledger.set_state(self.conn, LAST_CRAWL, state["until"])
                    ledger.set_state(self.conn, RECRAWL, {**state, "done": True})
        finally:
            if dry_run:
                self.conn.rollback()
        return self.report

    def _new_state(self, since: str | None) -> dict:
        if since is None:
            since = ledger.get_state(self.conn, LAST_CRAWL)
        if not since:
            raise WikihashError("no completed crawl to update: run `wikihash crawl` first, "
                                "or give --since")
        info = self.wiki.siteinfo()
        wikiowner.check(self.conn, info, self.wiki.api_url)
        until = info.get("time") or _now()
        stage = "feed"
        if _parse(until) - _parse(since) > self.feed_max_age:
            log.info("the last crawl (%s) is older than the change feed keeps", since)
            stage = "walk"
        else:
            oldest = self.wiki.oldest_change()
            if oldest is not None and _parse(oldest) > _parse(since):
                log.info("the change feed starts at %s, after %s: a gap", oldest, since)
                stage = "walk"
        self.report.mode = "feed" if stage == "feed" else "walk"
        return {"since": since, "until": until, "stage": stage, "cont": None, "done": False}

    def _checkpoint(self, state: dict, dry_run: bool) -> None:
        if not dry_run:
            ledger.set_state(self.conn, RECRAWL, state)

    def _commit(self, dry_run: bool) -> None:
        """End a step: commit it, or under --dry-run keep it in the one open transaction."""
        if not dry_run:
            self.conn.commit()

    # -- stage: the wiki's own change feed -------------------------------------------------

    def _feed(self, state: dict, dry_run: bool) -> dict:
        for rows, cont in self.wiki.changes(state["since"], state["until"], state["cont"]):
            self.report.changes_read += len(rows)
            titles, ids, files = _affected(rows)
            self._apply_pages(titles, ids)
            self._apply_files(files)
            state = {**state, "cont": cont} if cont else {**state, "stage": "shared",
                                                          "cont": None}
            self._checkpoint(state, dry_run)
            self._commit(dry_run)
        return state

    # -- stage: shared repositories --------------------------------------------------------

    def _shared(self, state: dict, dry_run: bool) -> dict:
        repos = [r for r in self.wiki.file_repos() if not r.get("local") and r.get("apiurl")]
        done = set(state.get("repos_done", []))
        for repo in repos:
            if repo["name"] in done:
                continue
            shared = self._shared_wiki(repo["apiurl"])
            for letype in ("upload", "delete"):
                key = f"{repo['name']}:{letype}"
                if key in done:
                    continue
                start = state["cont"] if state.get("feed_key") == key else None
                for rows, cont in shared.log_events(letype, state["since"], state["until"],
                                                    start):
                    self.report.changes_read += len(rows)
                    titles = {strip_namespace(r["title"]) for r in rows
                              if r.get("ns") == FILE_NS and r.get("title")}
                    self._apply_files(titles, repo=repo["name"])
                    state = {**state, "feed_key": key, "cont": cont}
                    self._checkpoint(state, dry_run)
                    self._commit(dry_run)
                done.add(key)
                state = {**state, "repos_done": sorted(done), "feed_key": None, "cont": None}
            done.add(repo["name"])
        return {**state, "stage": "done", "cont": None}

    # -- stage: the fallback walk ----------------------------------------------------------

    def _walk(self, state: dict, dry_run: bool) -> dict:
        with self.conn.cursor() as cur:
            cur.execute("SELECT now()")
            started = state.get("walk_started") or cur.fetchone()[0].isoformat()
        state = {**state, "walk_started": started}
        for articles, cont in self.wiki.walk_revisions(state["cont"]):
            known = self._revisions([a.page_id for a in articles])
            changed = [a.page_id for a in articles if known.get(a.page_id) != a.rev_id]
            with self.conn.cursor() as cur:
                cur.execute("UPDATE pages SET seen_at = now() WHERE page_id = ANY(%s)",
                            ([a.page_id for a in articles],))
            self._apply_pages(set(), set(changed))
            state = {**state, "cont": cont}
            self._checkpoint(state, dry_run)
            self._commit(dry_run)
        with self.conn.cursor() as cur:
            cur.execute("DELETE FROM pages WHERE seen_at < %s RETURNING title", (started,))
            self.report.pages_removed += [row[0] for row in cur.fetchall()]
            # Files may have changed anywhere; without a feed, look at each one once.
            cur.execute("SELECT title FROM files ORDER BY file_id")
            titles = [row[0] for row in cur.fetchall()]
        for i in range(0, len(titles), 500):
            self._apply_files(titles[i:i + 500])
        state = {**state, "stage": "done", "cont": None}
        self._checkpoint(state, dry_run)
        self._commit(dry_run)
        return state

    # -- applying the current state --------------------------------------------------------

    def _revisions(self, page_ids: list[int]) -> dict[int, int | None]:
        with self.conn.cursor() as cur:
            cur.execute("SELECT page_id, rev_id FROM pages WHERE page_id = ANY(%s)", (page_ids,))
            return dict(cur.fetchall())

    def _apply_pages(self, titles: set[str], page_ids: set[int]) -> None:
        if not titles and not page_ids:
            return
        lookup = self.wiki.pages(titles=sorted(titles), page_ids=sorted(page_ids))
        articles: list[Article] = lookup.articles
        known = self._revisions([a.page_id for a in articles])
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
        with self.conn.cursor() as cur:
            cur.execute("SELECT title FROM files WHERE title = ANY(%s)"
                        " AND (%s::text IS NULL OR repo = %s OR repo IS NULL)",
                        (list(titles), repo, repo))
            known = [row[0] for row in cur.fetchall()]
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


def _parse(timestamp: str) -> dt.datetime:
    return dt.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
