"""MediaWiki API access through mwclient: the article walk, imageinfo, site facts.

Every call goes through `Wiki.call`, which adds `maxlag` (mwclient adds it only to index.php),
waits out 429, 503 and maxlag answers for as long as Retry-After says, retries dropped
connections with backoff, and maps mwclient and requests errors to `pipeline.errors`. A wiki that
cannot be reached is named with the cause at once (`unreachable`): a name that does not resolve
is not retried, a refused connection only `UNREACHABLE_ATTEMPTS` times.
Calls are serial: one `Wiki` never has two requests in flight.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import mwclient
import mwclient.errors
import requests

from pipeline.errors import ApiError, RateLimited, WikiError
from pipeline.politeness import check_user_agent, retry_after

log = logging.getLogger(__name__)

UNREACHABLE_ATTEMPTS = 3  # tries of a refused connection: a restarting server, not a wrong URL
IMAGEINFO_BATCH = 50  # titles per imageinfo request, and scaled images per response
HASHABLE_MEDIA = {"BITMAP", "DRAWING"}
TEMPLATE_NAMESPACES = (10, 828)  # Template, Module (Scribunto)
FEED_NAMESPACES = (0, 6, *TEMPLATE_NAMESPACES)


@dataclass(frozen=True)
class Article:
    page_id: int
    title: str
    rev_id: int | None
    images: tuple[str, ...]  # file titles without the namespace prefix
    # page_touched (prop=info): moves when a template it uses is edited, with no new revision
    touched: str | None = None


@dataclass(frozen=True)
class FileInfo:
    title: str
    state: str  # 'pending', 'missing', 'unsupported' or 'failed'
    reason: str | None = None
    sha1: str | None = None
    mime: str | None = None
    media_type: str | None = None
    size: int | None = None
    width: int | None = None
    height: int | None = None
    repo: str | None = None
    url: str | None = None
    thumb_url: str | None = None


WalkBatch = tuple[list[Article], dict | None]
Feed = tuple[list[dict], dict | None]  # rows of a change feed, and the continuation after them


@dataclass
class PageLookup:
    articles: list[Article]
    gone_titles: set[str]  # main-namespace titles that are not articles now
    gone_ids: set[int]  # page ids that are not articles now


@dataclass
class CallStats:
    requests: int = 0
    waited: float = 0.0  # seconds spent honouring Retry-After and backoff


def strip_namespace(title: str) -> str:
    """'File:Foo: bar.jpg' -> 'Foo: bar.jpg' (namespace names contain no colon)."""
    return title.split(":", 1)[1] if ":" in title else title


class Wiki:
    """One MediaWiki, reached at its api.php URL."""

    def __init__(self, api_url: str, user_agent: str, *, maxlag: int = 5,
                 timeout: float = 60.0, max_attempts: int = 8,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        check_user_agent(user_agent, api_url)
        parts = urlsplit(api_url)
        path, _, script = parts.path.rpartition("/")
        if not script.endswith(".php"):
            raise WikiError(f"not an api.php URL: {api_url}")
        self.api_url = api_url
        self.maxlag = maxlag
        self.max_attempts = max_attempts
        self.stats = CallStats()
        self._sleep = sleep
        # do_init=False: mwclient's own init would call the API without maxlag.
        self.site = mwclient.Site(
            parts.netloc, path=path + "/", ext=".php", scheme=parts.scheme,
            clients_useragent=user_agent, do_init=False, max_retries=0, retry_timeout=0,
            connection_options={"timeout": timeout},
        )
        self.site.connection.trust_env = False
        self._last_headers: dict = {}
        self.site.connection.hooks["response"].append(self._remember_headers)

    def _remember_headers(self, response: requests.Response, *args, **kwargs) -> None:
        self._last_headers = dict(response.headers)

    def _retry_after(self, default: float) -> float:
        return retry_after(self._last_headers.get("Retry-After"), default)

    # -- one call --------------------------------------------------------------------------

    def call(self, action: str, *, method: str = "GET", **params) -> dict:
        """One API call with maxlag, waiting out rate limits; returns the decoded answer."""
        params = {k: v for k, v in params.items() if v is not None}
        params.setdefault("formatversion", "2")
        params["maxlag"] = str(self.maxlag)
        delay = 1.0
        for attempt in range(1, self.max_attempts + 1):
            try:
                answer = self._once(action, method, params)
            except RateLimited as exc:
                if attempt == self.max_attempts:
                    raise
                wait = exc.retry_after
            except WikiError as exc:
                limit = min(self.max_attempts, getattr(exc, "max_attempts", self.max_attempts))
                if not exc.retryable or attempt >= limit:
                    raise
                wait = delay
                delay = min(delay * 2, 60.0)
                log.warning("%s; trying again in %.1f s (attempt %d of %d)", exc, wait,
                            attempt, limit)
                self.stats.waited += wait
                self._sleep(wait)
                continue
            else:
                return answer
            log.warning("API busy (attempt %d), waiting %.1f s", attempt, wait)
            self.stats.waited += wait
            self._sleep(wait)
        raise AssertionError("unreachable")

    def _once(self, action: str, method: str, params: dict) -> dict:
        self.stats.requests += 1
        try:
            answer = self.site.raw_api(action, method, retry_on_error=False, **params)
        except requests.HTTPError as exc:
            response = exc.response
            status = response.status_code if response is not None else 0
            if status in (429, 503):
                header = response.headers.get("Retry-After")
                raise RateLimited(f"HTTP {status}", retry_after(header, 5.0)) from None
            raise WikiError(f"HTTP {status} from the API", retryable=status >= 500) from None
        except mwclient.errors.MaximumRetriesExceeded:
            # mwclient saw X-Database-Lag and would sleep itself; we own the waiting.
            raise RateLimited("maxlag", self._retry_after(5.0)) from None
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise unreachable(self.api_url, exc) from None
        except mwclient.errors.InvalidResponse as exc:
            raise WikiError(f"the API answered something that is not JSON: {exc!s:.80}") \
                from None
        if not isinstance(answer, dict):
            raise WikiError("the API answered something that is not a JSON object")
        error = answer.get("error")
        if error:
            code = error.get("code", "unknown")
            if code == "maxlag":
                wait = self._retry_after(float(error.get("lag", 5)))
                raise RateLimited(f"maxlag: {error.get('info', '')}", wait)
            if code in ("ratelimited", "readonly") or code.startswith("internal_api_error_DB"):
                raise RateLimited(code, self._retry_after(5.0))
            # Not retried here: an error caused by one title is isolated by the caller.
            raise ApiError(code, error.get("info", ""), retryable=False)
        return answer

    # -- site facts ----------------------------------------------------------------------

    def siteinfo(self) -> dict:
        """The wiki's general facts (sitename, server, articlepath, ...)."""
        answer = self.call("query", meta="siteinfo", siprop="general")
        return answer["query"]["general"]

    def login(self, user: str, password: str) -> None:
        """Log in with a bot password (Special:BotPasswords) for higher API limits."""
        token = self.call("query", meta="tokens", type="login")["query"]["tokens"]["logintoken"]
        answer = self.call("login", method="POST", lgname=user, lgpassword=password,
                           lgtoken=token)
        result = answer.get("login", {})
        if result.get("result") != "Success":
            raise ApiError("login-failed", result.get("reason", result.get("result", "")))

    # -- the walk ------------------------------------------------------------------------

    def walk_articles(self, start: dict | None = None) -> Iterator[WalkBatch]:
        """Every article (namespace 0, not a redirect) with its images and last revision.

        Yields one generator batch at a time with the continuation that resumes after it
        (None after the last). A batch is yielded only once the API says `batchcomplete`, so
        an article whose images span several responses comes out whole.
        """
        return self._batches(dict(
            generator="allpages", gapnamespace="0", gapfilterredir="nonredirects",
            gaplimit="max", prop="images|revisions", imlimit="max", rvprop="ids",
        ), start)

    def walk_revisions(self, start: dict | None = None) -> Iterator[WalkBatch]:
        """Like `walk_articles`, without the images: for comparing revision ids and
        `touched` (which a template edit moves without a revision)."""
        return self._batches(dict(
            generator="allpages", gapnamespace="0", gapfilterredir="nonredirects",
            gaplimit="max", prop="revisions|info", rvprop="ids",
        ), start)

    def _batches(self, params: dict, start: dict | None) -> Iterator[WalkBatch]:
        cont = dict(start) if start else {"continue": ""}
        pages: dict[int, dict] = {}
        while True:
            answer = self.call("query", **params, **cont)
            _merge_pages(answer, pages)
            next_cont = answer.get("continue")
            if "batchcomplete" in answer or next_cont is None:
                yield _articles(pages), next_cont
                pages = {}
            if next_cont is None:
                return
            cont = next_cont

    def pages(self, *, titles: Iterable[str] = (), page_ids: Iterable[int] = ()) -> PageLookup:
        """The current state of some pages, by title or id (50 a request).

        Articles come back whole, with their images; titles and ids that are no longer articles
        (deleted, now a redirect, moved out of the main namespace) are listed as gone.
        """
        lookup = PageLookup([], set(), set())
        for key, values in (("titles", list(dict.fromkeys(titles))),
                            ("pageids", [str(i) for i in dict.fromkeys(page_ids)])):
            for i in range(0, len(values), IMAGEINFO_BATCH):
                pages: dict[int, dict] = {}
                cont: dict = {"continue": ""}
                while True:
                    answer = self.call("query", prop="images|revisions|info", imlimit="max",
                                       rvprop="ids", **{key: "|".join(values[i:i + 50])},
                                       **cont)
                    for page in _pages(answer):
                        if page.get("missing") or page.get("invalid") or page.get("redirect") \
                                or page.get("ns", 0) != 0:
                            if page.get("title") and page.get("ns", 0) == 0:
                                lookup.gone_titles.add(page["title"])
                            if page.get("pageid"):
                                lookup.gone_ids.add(int(page["pageid"]))
                    _merge_pages(answer, pages, articles_only=True)
                    if "continue" not in answer:
                        break
                    cont = answer["continue"]
                lookup.articles.extend(_articles(pages))
        # A page asked for by title and by id comes back once.
        lookup.articles = list({a.page_id: a for a in lookup.articles}.values())
        return lookup

    # -- the change feed -----------------------------------------------------------------

    def changes(self, since: str, until: str, start: dict | None = None) -> Iterator[Feed]:
        """Recent changes to articles, files, templates and modules (whose edits change the
        articles that transclude them: `transcluded_by`) from `since` to `until`, oldest
        first."""
        return self._feed("recentchanges", dict(
            list="recentchanges", rcdir="newer", rcstart=since, rcend=until,
            rcprop="title|ids|timestamp|loginfo|sha1|redirect", rctype="edit|new|log",
            rcnamespace="|".join(map(str, FEED_NAMESPACES)), rclimit="max",
        ), start)

    def transcluded_by(self, titles: Iterable[str]) -> Iterator[list[int]]:
        """Page ids of the articles that transclude any of `titles` (templates, modules),
        directly or through another template, one API answer at a time."""
        values = list(dict.fromkeys(titles))
        for i in range(0, len(values), IMAGEINFO_BATCH):
            cont: dict = {"continue": ""}
            while True:
                answer = self.call("query", prop="transcludedin", tiprop="pageid",
                                   tinamespace="0", tishow="!redirect", tilimit="max",
                                   titles="|".join(values[i:i + IMAGEINFO_BATCH]), **cont)
                ids = [int(t["pageid"]) for page in _pages(answer)
                       for t in page.get("transcludedin", [])]
                if ids:
                    yield ids
                if "continue" not in answer:
                    break
                cont = answer["continue"]

    def log_events(self, letype: str, since: str, until: str,
                   start: dict | None = None) -> Iterator[Feed]:
        """Log entries of one type (upload, delete, move) from `since` to `until`."""
        return self._feed("logevents", dict(
            list="logevents", letype=letype, ledir="newer", lestart=since, leend=until,
            leprop="ids|title|type|timestamp|details", lelimit="max",
        ), start)

    def _feed(self, name: str, params: dict, start: dict | None) -> Iterator[Feed]:
        cont = dict(start) if start else {"continue": ""}
        while True:
            answer = self.call("query", **params, **cont)
            cont = answer.get("continue")
            yield answer.get("query", {}).get(name, []), cont
            if cont is None:
                return

    def oldest_change(self) -> str | None:
        """The timestamp of the oldest change the feed still holds."""
        answer = self.call("query", list="recentchanges", rcdir="newer", rclimit="1",
                           rcprop="timestamp")
        rows = answer.get("query", {}).get("recentchanges", [])
        return rows[0]["timestamp"] if rows else None

    def file_repos(self) -> list[dict]:
        """The file repositories this wiki uses (itself, and shared ones such as Commons)."""
        answer = self.call("query", meta="filerepoinfo")
        return answer.get("query", {}).get("repos", [])

    # -- files ---------------------------------------------------------------------------

    def file_info(self, titles: list[str], width: int) -> list[FileInfo]:
        """Facts about each file title (without 'File:'), `IMAGEINFO_BATCH` per request.

        A title that makes the API fail is isolated by splitting its batch, so it alone is
        recorded as failed.
        """
        found: list[FileInfo] = []
        for i in range(0, len(titles), IMAGEINFO_BATCH):
            found.extend(self._isolating(titles[i:i + IMAGEINFO_BATCH], width))
        return found

    def _isolating(self, titles: list[str], width: int) -> list[FileInfo]:
        try:
            return self._imageinfo(titles, width)
        except ApiError as exc:
            if len(titles) == 1:
                return [FileInfo(titles[0], "failed", reason=f"API error: {exc}")]
            half = len(titles) // 2
            return self._isolating(titles[:half], width) + self._isolating(titles[half:], width)

    def _imageinfo(self, titles: list[str], width: int) -> list[FileInfo]:
        by_title: dict[str, dict] = {}
        renamed: dict[str, str] = {}
        cont: dict = {"continue": ""}
        while True:
            answer = self.call(
                "query", titles="|".join("File:" + t for t in titles), prop="imageinfo",
                iiprop="sha1|mime|mediatype|size|url", iiurlwidth=str(width), **cont,
            )
            query = answer.get("query", {})
            for item in query.get("normalized", []):
                renamed[strip_namespace(item["to"])] = strip_namespace(item["from"])
            for page in _pages(answer):
                title = strip_namespace(page["title"])
                entry = by_title.setdefault(title, {})
                entry.update({k: v for k, v in page.items() if k != "imageinfo"})
                if page.get("imageinfo"):
                    entry["imageinfo"] = page["imageinfo"]
            if "continue" not in answer:
                break
            cont = answer["continue"]
        infos = []
        for title, page in by_title.items():
            infos.append(_file_info(renamed.get(title, title), page))
        answered = {info.title for info in infos}
        infos.extend(FileInfo(t, "failed", reason="not in the API's answer")
                     for t in titles if t not in answered)
        return infos


def unreachable(api_url: str, exc: BaseException) -> WikiError:
    """A WikiError naming the host and the cause; only what may pass by itself is retryable."""
    host = urlsplit(api_url).netloc
    reason = exc
    while getattr(reason, "reason", None) is not None and reason is not reason.reason:
        reason = reason.reason  # requests -> urllib3 MaxRetryError -> the connection's error
    text = str(reason)
    attempts = None
    if isinstance(exc, requests.Timeout):
        cause, retryable = "no answer in time", True
    elif "Failed to resolve" in text or "Name or service not known" in text \
            or "nodename nor servname" in text:
        cause, retryable = "its name does not resolve (DNS)", \
            "Temporary failure in name resolution" in text
        attempts = UNREACHABLE_ATTEMPTS
    elif "Connection refused" in text:
        cause, retryable, attempts = "connection refused", True, UNREACHABLE_ATTEMPTS
    elif "reset" in text.lower() or "aborted" in text.lower():
        cause, retryable = "the connection was cut", True
    else:
        cause, retryable = text.split(": ", 1)[-1][:120] or type(exc).__name__, True
    error = WikiError(f"cannot reach the wiki at {host} ({api_url}): {cause}")
    error.retryable = retryable
    if attempts is not None:
        error.max_attempts = attempts
    return error


def _merge_pages(answer: dict, pages: dict[int, dict], *, articles_only: bool = False) -> None:
    """Add one response's pages to `pages`; a page's images may span several responses."""
    for page in _pages(answer):
        if "pageid" not in page:
            continue
        if articles_only and (page.get("redirect") or page.get("missing")
                              or page.get("invalid") or page.get("ns", 0) != 0):
            continue
        entry = pages.setdefault(int(page["pageid"]),
                                 {"title": page["title"], "rev": None, "images": []})
        entry["touched"] = page.get("touched", entry.get("touched"))
        revisions = page.get("revisions") or []
        if revisions:
            entry["rev"] = int(revisions[0]["revid"])
        entry["images"].extend(strip_namespace(i["title"]) for i in page.get("images", []))


def _articles(pages: dict[int, dict]) -> list[Article]:
    return [Article(pid, e["title"], e["rev"], tuple(dict.fromkeys(e["images"])),
                    e.get("touched")) for pid, e in sorted(pages.items())]


def _pages(answer: dict) -> list[dict]:
    pages = answer.get("query", {}).get("pages", [])
    return list(pages.values()) if isinstance(pages, dict) else pages


def _file_info(title: str, page: dict) -> FileInfo:
    """A FileInfo from one imageinfo page entry."""
    if page.get("invalid"):
        return FileInfo(title, "failed", reason=f"invalid title: {page.get('invalidreason', '')}")
    infos = page.get("imageinfo") or []
    if not infos:
        return FileInfo(title, "missing", reason="no such file")
    ii = infos[0]
    media_type = ii.get("mediatype")
    facts = dict(
        sha1=ii.get("sha1"), mime=ii.get("mime"), media_type=media_type,
        size=ii.get("size"), width=ii.get("width"), height=ii.get("height"),
        repo=page.get("imagerepository") or None, url=ii.get("url"),
    )
    if media_type not in HASHABLE_MEDIA:
        return FileInfo(title, "unsupported", reason=f"media type {media_type} ({ii.get('mime')})",
                        **facts)
    thumb = ii.get("thumburl")
    if thumb and _is_icon(thumb):
        return FileInfo(title, "unsupported", reason="the wiki shows only a file-type icon",
                        **facts)
    if not facts["sha1"] or not facts["url"]:
        return FileInfo(title, "failed", reason="imageinfo without sha1 or url", **facts)
    return FileInfo(title, "pending", thumb_url=thumb if thumb != facts["url"] else None, **facts)


def _is_icon(url: str) -> bool:
    path = urlsplit(url).path
    return "/static/" in path or "/fileicon" in path or "/resources/assets/file-type-icons" in path
