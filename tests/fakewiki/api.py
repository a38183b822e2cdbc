"""api.php: turns one request's parameters into the JSON MediaWiki 1.43 would answer.

Results are built in formatversion=2 shape (booleans, page lists) and converted for
formatversion=1 at the end (`true` → "", `false` dropped, pages keyed by page id).
Continuation follows ApiContinuationManager: prop modules continue within one generator
batch (`batchcomplete` only once a batch is finished), then the generator moves on.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from . import media
from .model import (
    FILE_NS,
    NAMESPACES,
    FakeWiki,
    Page,
    dbkey,
    full_title,
    iso,
    media_type,
    parse_ts,
    split_title,
    ts_mw,
    url_encode,
)

GENERATOR = "MediaWiki 1.43.0"
LIMIT_MAX, LIMIT_BOT_MAX = 500, 5000
TITLES_MAX, TITLES_BOT_MAX = 50, 500
TRANSFORM_LIMIT = 50  # ApiQueryImageInfo::TRANSFORM_LIMIT: scaled images per request
MAIN_PARAMS = {
    "action", "format", "formatversion", "maxlag", "smaxage", "maxage", "assert",
    "assertuser", "requestid", "servedby", "curtimestamp", "responselanginfo", "origin",
    "uselang", "variant", "errorformat", "errorlang", "errorsuselocal", "utf8", "ascii",
    "callback",
}
PROP_MODULES = {"info": "in", "revisions": "rv", "images": "im", "imageinfo": "ii"}
LIST_MODULES = {"allpages": "ap", "recentchanges": "rc", "logevents": "le"}
META_MODULES = {"siteinfo": "si", "userinfo": "ui", "tokens": "", "filerepoinfo": "fri"}
GENERATORS = {"allpages": "gap"}


class ApiError(Exception):
    def __init__(self, code: str, info: str, **extra: Any) -> None:
        super().__init__(code)
        self.code, self.info, self.extra = code, info, extra


@dataclass
class Session:
    token: str
    user: str | None = None
    bot: bool = False
    login_token: str = field(default_factory=lambda: secrets.token_hex(16) + "+\\")


@dataclass
class Context:
    wiki: FakeWiki
    session: Session
    error_titles: frozenset = frozenset()  # Faults.error_titles, file names
    error_code: str = "internal_api_error_InvalidArgumentException"


class Request:
    """The parameters, with MediaWiki's bookkeeping of which were used and warnings."""

    def __init__(self, params: dict[str, str], ctx: Context) -> None:
        self.params, self.ctx = params, ctx
        self.used: set[str] = set(MAIN_PARAMS)
        self.warnings: dict[str, list[str]] = {}
        self.limits: dict[str, int] = {}
        self.fv2 = params.get("formatversion") in ("2", "latest")

    def get(self, name: str, default: str | None = None) -> str | None:
        self.used.add(name)
        return self.params.get(name, default)

    def has(self, name: str) -> bool:
        self.used.add(name)
        return name in self.params

    def warn(self, module: str, text: str) -> None:
        self.warnings.setdefault(module, []).append(text)

    def multi(self, name: str, allowed: set[str] | None, module: str,
              default: str = "", limit: int | None = None) -> list[str]:
        raw = self.get(name)
        if raw is None:
            raw = default
        values = [v for v in raw.split("|") if v != ""] if raw else []
        if limit is None:
            limit = TITLES_BOT_MAX if self.ctx.session.bot else TITLES_MAX
        if len(values) > limit:
            self.warn(module, f'Too many values supplied for parameter "{name}". '
                              f"The limit is {limit}.")
            values = values[:limit]
        if allowed is not None:
            bad = [v for v in values if v not in allowed]
            if bad:
                self.warn(module, f'Unrecognized value{"s" if len(bad) > 1 else ""} for '
                                  f'parameter "{name}": {", ".join(bad)}.')
            values = [v for v in values if v in allowed]
        seen: list[str] = []
        for v in values:
            if v not in seen:
                seen.append(v)
        return seen

    def enum(self, name: str, allowed: set[str], default: str) -> str:
        value = self.get(name, default)
        if value not in allowed:
            raise ApiError("badvalue", f'Unrecognized value for parameter "{name}": {value}.')
        return value

    def limit(self, name: str, module: str, default: int, maximum: int = LIMIT_MAX,
              bot_maximum: int = LIMIT_BOT_MAX) -> int:
        raw = self.get(name)
        top = bot_maximum if self.ctx.session.bot else maximum
        if raw is None:
            return default
        if raw == "max":
            self.limits[module] = top
            return top
        try:
            value = int(raw)
        except ValueError:
            raise ApiError("badinteger", f'Invalid value "{raw}" for integer parameter '
                                         f'"{name}".') from None
        if value < 1:
            self.warn(module, f"{name} may not be less than 1 (set to {value}).")
            return 1
        if value > top:
            group = "bots or sysops" if self.ctx.session.bot else "users"
            self.warn(module, f"{name} may not be over {top} (set to {value}) for {group}.")
            return top
        return value

    def timestamp(self, name: str):
        raw = self.get(name)
        if raw is None:
            return None
        try:
            return parse_ts(raw)
        except ValueError:
            raise ApiError("badtimestamp", f'Invalid value "{raw}" for timestamp parameter '
                                           f'"{name}".') from None

    def unused(self) -> list[str]:
        return sorted(k for k in self.params if k not in self.used)


# -- entry point ---------------------------------------------------------------------------


def handle(params: dict[str, str], ctx: Context, api_url: str) -> tuple[dict, dict[str, str]]:
    """Answer one api.php request: (JSON body, extra headers). Status is always 200."""
    req = Request(params, ctx)
    fv2 = params.get("formatversion") in ("2", "latest")
    headers: dict[str, str] = {}
    result: dict[str, Any] = {}
    try:
        if params.get("format", "json") not in ("json",):
            raise ApiError("badvalue", f'Unrecognized value for parameter "format": '
                                       f'{params.get("format")}.')
        action = req.get("action", "help")
        assertion = req.get("assert")
        if assertion == "user" and ctx.session.user is None:
            raise ApiError("assertuserfailed", "You are no longer logged in, so the action "
                                               "could not be completed.")
        if assertion == "bot" and not ctx.session.bot:
            raise ApiError("assertbotfailed", 'You do not have the "bot" right, so the action '
                                              "could not be completed.")
        with ctx.wiki.lock:
            if action == "query":
                result = query(req)
            elif action == "login":
                result = login(req)
            elif action == "logout":
                ctx.session.user, ctx.session.bot = None, False
                result = {}
            else:
                raise ApiError("badvalue", f'Unrecognized value for parameter "action": '
                                           f"{action}.")
        if req.has("curtimestamp"):
            result["curtimestamp"] = iso(ctx.wiki.clock)
    except ApiError as err:
        error = {"code": err.code, "info": err.info, **err.extra}
        doc = (f"See {api_url} for API usage. Subscribe to the mediawiki-api-announce "
               "mailing list at &lt;https://lists.wikimedia.org/postorius/lists/"
               "mediawiki-api-announce.lists.wikimedia.org/&gt; for notice of API "
               "deprecations and breaking changes.")
        error["docref" if fv2 else "*"] = doc
        result = {"error": error}
        headers["MediaWiki-API-Error"] = err.code
    unused = req.unused()
    if unused:
        plural = "s" if len(unused) > 1 else ""
        req.warnings.setdefault("main", []).insert(
            0, f"Unrecognized parameter{plural}: {', '.join(unused)}.")
    out: dict[str, Any] = {}
    if req.warnings:
        key = "warnings" if fv2 else "*"
        out["warnings"] = {m: {key: "\n".join(w)} for m, w in req.warnings.items()}
    if req.limits and "error" not in result:
        out["limits"] = req.limits
    out.update(result)
    out["servedby"] = "mw-fake1"
    return (_drop_keys(out) if fv2 else to_fv1(out)), headers


def _drop_keys(value: Any) -> Any:
    """formatversion=2 lists pages without the ids formatversion=1 keys them by."""
    if isinstance(value, dict):
        return {k: _drop_keys(v) for k, v in value.items() if k != "_key"}
    if isinstance(value, list):
        return [_drop_keys(v) for v in value]
    return value


def to_fv1(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if v is True:
                out[k] = ""
            elif v is False:
                continue
            elif k == "pages" and isinstance(v, list):
                out[k] = {str(p["_key"]): to_fv1(p) for p in v}
            elif k == "_key":
                continue
            else:
                out[k] = to_fv1(v, k)
        return out
    if isinstance(value, list):
        return [to_fv1(v) for v in value]
    return value


# -- login ------------------------------------------------------------------------------------


def login(req: Request) -> dict:
    session, wiki = req.ctx.session, req.ctx.wiki
    name, password, token = req.get("lgname"), req.get("lgpassword"), req.get("lgtoken")
    req.get("lgdomain")
    if not name or password is None:
        raise ApiError("missingparam", 'The "lgname" and "lgpassword" parameters are required.')
    if token is None:
        req.warn("main", "Fetching a token via \"action=login\" is deprecated. Use "
                         "\"action=query&meta=tokens&type=login\" instead.")
        return {"login": {"result": "NeedToken", "token": session.login_token}}
    if token != session.login_token:
        return {"login": {"result": "WrongToken"}}
    known = wiki.users.get(name)
    if known is None or known[0] != password:
        return {"login": {"result": "Failed", "reason": "Incorrect username or password "
                                                       "entered. Please try again."}}
    session.user, session.bot = name.split("@", 1)[0], known[1]
    session.login_token = secrets.token_hex(16) + "+\\"
    return {"login": {"result": "Success", "lguserid": 1 + sorted(wiki.users).index(name),
                      "lgusername": session.user}}


# -- query ------------------------------------------------------------------------------------


@dataclass
class PageEntry:
    """One page of the result set: an existing page, or a missing title."""

    ns: int
    title: str
    page: Page | None
    data: dict = field(default_factory=dict)

    @property
    def dbkey(self) -> bytes:
        return dbkey(self.title).encode()


def query(req: Request) -> dict:
    props = req.multi("prop", set(PROP_MODULES), "query", limit=50)
    lists = req.multi("list", set(LIST_MODULES), "query", limit=50)
    metas = req.multi("meta", set(META_MODULES), "query", limit=50)
    generator = req.get("generator")
    if generator is not None and generator not in GENERATORS:
        raise ApiError("badvalue", f'Unrecognized value for parameter "generator": '
                                   f"{generator}.")
    modules = lists + props + metas
    skip: set[str] = set()
    generator_params: dict[str, str] = {}
    cont = req.get("continue")
    if cont:
        if "||" not in cont:
            raise ApiError("badcontinue", "Invalid continue param. You should pass the "
                                          "original value returned by the previous query.")
        gen_part, skip_part = cont.split("||", 1)
        skip = {m for m in skip_part.split("|") if m}
        if gen_part not in ("", "-"):
            generator_params = {k: req.params[k] for k in gen_part.split("|")
                                if k in req.params}
        elif gen_part == "-":
            # The generator is done, but its last batch is still being listed: its position
            # must travel on with every response, or a client that merges each `continue`
            # into its original request would start the generator over.
            generator_params = {k: v for k, v in req.params.items()
                                if k.startswith("g") and k.endswith("continue")}
    for module in skip:
        prefix = {**PROP_MODULES, **LIST_MODULES, **META_MODULES}.get(module)
        if prefix:
            req.used.update(k for k in req.params if k.startswith(prefix))

    query_out: dict[str, Any] = {}
    continuation: dict[str, dict[str, str]] = {}
    generator_cont: dict[str, str] = {}

    entries: list[PageEntry] | None = None
    if generator:
        titles, generator_cont = gen_allpages(req)
        entries = [PageEntry(p.ns, p.title, p) for p in titles]
    elif req.has("titles") or req.has("pageids"):
        entries = pageset_from_titles(req, query_out)
    elif props:
        entries = []

    for module in lists:
        if module in skip:
            continue
        items, cont_value = LIST_FUNCS[module](req)
        query_out[module] = items
        if cont_value:
            continuation[module] = cont_value
    if entries is not None:
        good = sorted((e for e in entries if e.page), key=lambda e: e.page.pageid)
        for module in props:
            if module in skip:
                continue
            cont_value = PROP_FUNCS[module](req, entries, good)
            if cont_value:
                continuation[module] = cont_value
        pages = []
        missing = 0
        # As ApiQuery::outputGeneralPageInfo: missing and invalid titles first, then pages.
        for entry in entries:
            if entry.page is None:
                missing -= 1
                flag = {} if "invalid" in entry.data else {"missing": True}
                pages.append({"_key": missing, "ns": entry.ns,
                              "title": full_title(entry.ns, entry.title), **flag,
                              **entry.data})
        for entry in good:
            pages.append({"_key": entry.page.pageid, "pageid": entry.page.pageid,
                          "ns": entry.ns, "title": full_title(entry.ns, entry.title),
                          **entry.data})
        if pages:
            query_out["pages"] = pages
    for module in metas:
        if module in skip:
            continue
        query_out.update(META_FUNCS[module](req))

    # ApiContinuationManager::getContinuation
    data: dict[str, str] = {}
    for value in continuation.values():
        data.update(value)
    finished = [m for m in modules if m not in continuation]
    batchcomplete = False
    if generator_cont:
        if data:
            generator_keys = "|".join(generator_params)
            data.update(generator_params)
        else:
            generator_keys = "|".join(generator_cont)
            data.update(generator_cont)
            finished = [m for m in finished if m not in props]
            batchcomplete = True
    else:
        generator_keys = "-" if generator else ""
        if data and generator:
            data.update(generator_params)
        batchcomplete = not data
    out: dict[str, Any] = {}
    if batchcomplete:
        out["batchcomplete"] = True
    if data:
        data["continue"] = generator_keys + "||" + "|".join(finished)
        out["continue"] = data
    if query_out:
        out["query"] = query_out
    return out


def pageset_from_titles(req: Request, query_out: dict) -> list[PageEntry]:
    wiki = req.ctx.wiki
    entries: list[PageEntry] = []
    normalized = []
    seen: set[tuple[int, str]] = set()
    if req.has("titles"):
        for raw in req.multi("titles", None, "main"):
            try:
                ns, text = split_title(raw)
            except ValueError:
                entries.append(PageEntry(0, raw, None, {"invalidreason": 'The requested '
                               'page title is empty or contains only the name of a '
                               'namespace.' if not raw.strip() else f'The requested page '
                               f'title contains invalid characters: "{raw}".',
                               "invalid": True}))
                continue
            title = full_title(ns, text)
            if title != raw:
                normalized.append({"fromencoded": False, "from": raw, "to": title})
            if (ns, text) in seen:
                continue
            seen.add((ns, text))
            entries.append(PageEntry(ns, text, wiki.pages.get((ns, text))))
    if req.has("pageids"):
        for raw in req.multi("pageids", None, "main"):
            page = wiki.page_by_id(int(raw)) if raw.isdigit() else None
            if page is None:
                entries.append(PageEntry(0, "", None, {"pageid": int(raw) if raw.isdigit()
                                                        else 0}))
            elif (page.ns, page.title) not in seen:
                seen.add((page.ns, page.title))
                entries.append(PageEntry(page.ns, page.title, page))
    if normalized:
        query_out["normalized"] = normalized
    return entries


# -- generator=allpages --------------------------------------------------------------------


def gen_allpages(req: Request) -> tuple[list[Page], dict[str, str]]:
    return allpages(req, "gap", "allpages")


def allpages(req: Request, p: str, module: str) -> tuple[list[Page], dict[str, str]]:
    wiki = req.ctx.wiki
    ns = int(req.get(p + "namespace", "0"))
    if ns not in NAMESPACES or ns < 0:
        raise ApiError("badvalue", f'Unrecognized value for parameter "{p}namespace": {ns}.')
    redir = req.enum(p + "filterredir", {"all", "redirects", "nonredirects"}, "all")
    direction = req.enum(p + "dir", {"ascending", "descending"}, "ascending")
    req.enum(p + "filterlanglinks", {"all", "withlanglinks", "withoutlanglinks"}, "all")
    limit = req.limit(p + "limit", module, 10)
    start = req.get(p + "continue") or req.get(p + "from")
    end = req.get(p + "to")
    prefix = req.get(p + "prefix")
    minsize, maxsize = req.get(p + "minsize"), req.get(p + "maxsize")
    protected = req.get(p + "prtype")
    req.get(p + "prlevel")

    def key(text: str) -> bytes:
        return dbkey(split_title(text)[1] if text else "").encode()

    desc = direction == "descending"
    if protected:
        return [], {}  # nothing on a fake wiki is protected
    pfx = dbkey(prefix[:1].upper() + prefix[1:]).encode() if prefix else None
    e = key(end) if end else None
    first = key(start) if start else (pfx if pfx and not desc else None)
    pages: list[Page] = []
    # Streamed in order and cut at limit + 1, so a batch costs its size, not the wiki's.
    for pg in wiki.pages_sorted(ns, first, desc):
        k = dbkey(pg.title).encode()
        if e is not None and (k < e if desc else k > e):
            break
        if pfx is not None and not k.startswith(pfx):
            if k > pfx if not desc else k < pfx:
                break
            continue
        if (redir == "redirects" and not pg.is_redirect) or (
                redir == "nonredirects" and pg.is_redirect):
            continue
        if (minsize and pg.latest.size < int(minsize)) or (
                maxsize and pg.latest.size > int(maxsize)):
            continue
        pages.append(pg)
        if len(pages) > limit:
            break
    cont = {}
    if len(pages) > limit:
        cont = {p + "continue": dbkey(pages[limit].title)}
    return pages[:limit], cont


def list_allpages(req: Request):
    pages, cont = allpages(req, "ap", "allpages")
    return [{"pageid": pg.pageid, "ns": pg.ns, "title": pg.full_title} for pg in pages], cont


# -- prop modules -----------------------------------------------------------------------------


def prop_info(req: Request, entries: list[PageEntry], good: list[PageEntry]):
    inprop = req.multi("inprop", {"protection", "talkid", "watched", "watchers",
                                  "visitingwatchers", "notificationtimestamp", "subjectid",
                                  "associatedpage", "url", "preload", "displaytitle",
                                  "varianttitles", "linkclasses"}, "info")
    base = req.ctx.wiki.base_url or ""
    for entry in entries:
        data = entry.data
        data.update({"contentmodel": "wikitext", "pagelanguage": req.ctx.wiki.lang,
                     "pagelanguagehtmlcode": req.ctx.wiki.lang, "pagelanguagedir": "ltr"})
        if entry.page:
            page = entry.page
            data.update({"touched": iso(page.latest.timestamp), "lastrevid": page.latest.revid,
                         "length": page.latest.size})
            if page.is_redirect:
                data["redirect"] = True
            if len(page.revisions) == 1:
                data["new"] = True
        if "protection" in inprop:
            data["protection"] = []
            data["restrictiontypes"] = ["edit", "move"] if entry.page else ["create"]
        if "url" in inprop:
            title = full_title(entry.ns, entry.title)
            data["fullurl"] = data["canonicalurl"] = f"{base}/wiki/{url_encode(title)}"
            data["editurl"] = f"{base}/w/index.php?title={url_encode(title)}&action=edit"
    return None


def prop_revisions(req: Request, entries: list[PageEntry], good: list[PageEntry]):
    rvprop = req.multi("rvprop", {"ids", "flags", "timestamp", "user", "userid", "size",
                                  "slotsize", "sha1", "slotsha1", "contentmodel", "comment",
                                  "parsedcomment", "content", "tags", "roles"},
                       "revisions", default="ids|timestamp|flags|comment|user")
    req.get("rvslots")
    single = len(good) == 1
    limit = req.limit("rvlimit", "revisions", 1) if single else 1
    if not single and req.params.get("rvlimit"):
        raise ApiError("invalidparammix", 'The "rvlimit" parameter may only be used with a '
                                          "single page.")
    for entry in good:
        revs = entry.page.revisions[::-1][:limit]
        out = []
        for rev in revs:
            item: dict[str, Any] = {}
            if "ids" in rvprop:
                item.update(revid=rev.revid, parentid=rev.parentid)
            if "flags" in rvprop:
                item["minor"] = False
            if "user" in rvprop:
                item["user"] = rev.user
            if "timestamp" in rvprop:
                item["timestamp"] = iso(rev.timestamp)
            if "size" in rvprop:
                item["size"] = rev.size
            if "sha1" in rvprop:
                item["sha1"] = rev.sha1
            if "comment" in rvprop:
                item["comment"] = rev.comment
            if "content" in rvprop:
                item["slots"] = {"main": {"contentmodel": "wikitext", "contentformat":
                                          "text/x-wiki", "content": rev.text}}
            out.append(item)
        entry.data["revisions"] = out
    return None


def prop_images(req: Request, entries: list[PageEntry], good: list[PageEntry]):
    limit = req.limit("imlimit", "images", 10)
    direction = req.enum("imdir", {"ascending", "descending"}, "ascending")
    only = {dbkey(split_title(t)[1]) for t in req.multi("imimages", None, "images")}
    cont = req.get("imcontinue")
    cont_pid, cont_key = 0, b""
    if cont:
        pid, _, key = cont.partition("|")
        if not pid.isdigit() or not key:
            raise ApiError("badcontinue", "Invalid continue param. You should pass the "
                                          "original value returned by the previous query.")
        cont_pid, cont_key = int(pid), key.encode()
    desc = direction == "descending"
    count = 0
    for entry in sorted(good, key=lambda e: e.page.pageid, reverse=desc):
        pid = entry.page.pageid
        if cont and (pid > cont_pid if desc else pid < cont_pid):
            continue
        names = entry.page.images[::-1] if desc else entry.page.images
        for name in names:
            key = dbkey(name).encode()
            if only and dbkey(name) not in only:
                continue
            if cont and pid == cont_pid and (key > cont_key if desc else key < cont_key):
                continue
            count += 1
            if count > limit:
                return {"imcontinue": f"{pid}|{dbkey(name)}"}
            entry.data.setdefault("images", []).append({"ns": FILE_NS, "title": f"File:{name}"})
    return None


IIPROPS = {"timestamp", "user", "userid", "comment", "parsedcomment", "canonicaltitle", "url",
           "size", "dimensions", "sha1", "mime", "thumbmime", "mediatype", "metadata",
           "commonmetadata", "extmetadata", "archivename", "bitdepth", "uploadwarning",
           "badfile"}


def prop_imageinfo(req: Request, entries: list[PageEntry], good: list[PageEntry]):
    wiki = req.ctx.wiki
    iiprop = req.multi("iiprop", IIPROPS, "imageinfo", default="timestamp|user")
    req.limit("iilimit", "imageinfo", 1)
    width = req.get("iiurlwidth")
    height = req.get("iiurlheight")
    req.get("iiurlparam")
    req.get("iilocalonly")
    req.get("iimetadataversion")
    req.get("iiextmetadatalanguage")
    req.get("iibadfilecontexttitle")
    req.timestamp("iistart")
    req.timestamp("iiend")
    scale = None
    if width is not None or height is not None:
        try:
            scale = int(width) if width is not None else None
            if height is not None and scale is None:
                scale = -1
        except ValueError:
            raise ApiError("badinteger", f'Invalid value "{width}" for integer parameter '
                                         '"iiurlwidth".') from None
    if (height is not None or scale) and "url" not in iiprop:
        scale = None  # thumbnails are only reported with iiprop=url
    cont = req.get("iicontinue")
    from_key = cont.split("|", 1)[0].encode() if cont else b""
    files = sorted((e for e in entries if e.ns == FILE_NS), key=lambda e: e.dbkey)
    if any(e.title in req.ctx.error_titles for e in files):
        raise ApiError(req.ctx.error_code,
                       f"[{secrets.token_hex(10)}] Caught exception of type "
                       f"{req.ctx.error_code.removeprefix('internal_api_error_')}",
                       errorclass=req.ctx.error_code.removeprefix("internal_api_error_"))
    transforms = 0
    for entry in files:
        if entry.dbkey < from_key:
            continue
        found = wiki.find_file(entry.title)
        if found is None:
            entry.data["imagerepository"] = ""
            continue
        record, repo = found
        if entry.page is None:
            entry.data["known"] = True
        version = record.current
        if scale is not None and media_type(version.mime) == "BITMAP" \
                and not (version.width and version.height):
            # MediaWiki cannot scale a bitmap whose header gave no size: the whole request fails.
            raise ApiError("urlparamnormal",
                           f"Could not normalize image parameters for {record.name}.")
        if scale is not None:
            if transforms >= TRANSFORM_LIMIT:
                return {"iicontinue": f"{dbkey(record.name)}|{ts_mw(version.timestamp)}"}
            transforms += 1
        entry.data["imagerepository"] = repo.name
        entry.data["imageinfo"] = [image_info(record.name, version, repo, iiprop, scale,
                                              wiki)]
    return None


def image_info(name, version, repo: FakeWiki, iiprop, scale, wiki: FakeWiki) -> dict:
    info: dict[str, Any] = {}
    if "timestamp" in iiprop:
        info["timestamp"] = iso(version.timestamp)
    if "user" in iiprop:
        info["user"] = version.user
    if "userid" in iiprop:
        info["userid"] = 1
    if "size" in iiprop or "dimensions" in iiprop:
        info.update(size=version.size, width=version.width, height=version.height)
        if version.duration is not None:
            info["duration"] = version.duration
    if "comment" in iiprop:
        info["comment"] = version.comment
    if "canonicaltitle" in iiprop:
        info["canonicaltitle"] = f"File:{name}"
    if "url" in iiprop:
        if scale is not None:
            thumb = media.thumb_for(name, version, scale)
            if thumb.kind == "error":
                info["thumberror"] = thumb.error
            else:
                if thumb.kind == "original":
                    url = repo.file_url(name)
                elif thumb.kind == "icon":
                    url = repo.require_base() + media.ICON_DIR + thumb.name
                else:
                    url = repo.thumb_url(name, thumb.name)
                info.update(thumburl=url, thumbwidth=thumb.width, thumbheight=thumb.height)
                if "thumbmime" in iiprop:
                    info["thumbmime"] = ("image/png" if thumb.kind == "icon" else
                                         media.thumb_mime(thumb.name or name, version))
        info["url"] = repo.file_url(name)
        info["descriptionurl"] = repo.page_url(f"File:{name}")
        page = repo.pages.get((FILE_NS, name))
        if page is not None:
            info["descriptionshorturl"] = (f"{repo.require_base()}/w/index.php?curid="
                                           f"{page.pageid}")
    if "sha1" in iiprop:
        info["sha1"] = version.sha1
    if "mime" in iiprop:
        info["mime"] = version.mime
    if "mediatype" in iiprop:
        info["mediatype"] = media_type(version.mime)
    if "metadata" in iiprop:
        info["metadata"] = []
    if "commonmetadata" in iiprop:
        info["commonmetadata"] = []
    if "extmetadata" in iiprop:
        info["extmetadata"] = {}
    if "bitdepth" in iiprop:
        info["bitdepth"] = 8
    if "badfile" in iiprop:
        info["badfile"] = False
    return info


# -- list modules -------------------------------------------------------------------------


RCPROPS = {"user", "userid", "comment", "parsedcomment", "flags", "timestamp", "title", "ids",
           "sizes", "redirect", "patrolled", "loginfo", "tags", "sha1"}


def _feed_window(req: Request, p: str, module: str, items, key_id):
    """Order, bound and continue a feed as recentchanges and logevents do."""
    direction = req.enum(p + "dir", {"older", "newer"}, "older")
    start, end = req.timestamp(p + "start"), req.timestamp(p + "end")
    limit = req.limit(p + "limit", module, 10)
    cont = req.get(p + "continue")
    newer = direction == "newer"
    items = sorted(items, key=lambda c: (c.timestamp, key_id(c)), reverse=not newer)
    if start:
        items = [c for c in items if (c.timestamp >= start if newer else c.timestamp <= start)]
    if end:
        items = [c for c in items if (c.timestamp <= end if newer else c.timestamp >= end)]
    if cont:
        ts_part, _, id_part = cont.partition("|")
        try:
            marker = (parse_ts(ts_part), int(id_part))
        except ValueError:
            raise ApiError("badcontinue", "Invalid continue param. You should pass the "
                                          "original value returned by the previous query."
                           ) from None
        items = [c for c in items
                 if ((c.timestamp, key_id(c)) >= marker if newer
                     else (c.timestamp, key_id(c)) <= marker)]
    if len(items) > limit:
        nxt = items[limit]
        return items[:limit], {p + "continue": f"{ts_mw(nxt.timestamp)}|{key_id(nxt)}"}
    return items, None


def list_recentchanges(req: Request):
    wiki = req.ctx.wiki
    rcprop = req.multi("rcprop", RCPROPS, "recentchanges", default="title|timestamp|ids")
    types = req.multi("rctype", {"edit", "new", "log", "external", "categorize"},
                      "recentchanges", default="edit|new|log|categorize")
    namespaces = req.multi("rcnamespace", None, "recentchanges")
    title = req.get("rctitle")
    user = req.get("rcuser")
    req.multi("rcshow", None, "recentchanges")
    req.get("rctoponly")
    req.get("rcgeneraterevisions")
    items = [c for c in wiki.changes if c.type in types]
    if namespaces and "*" not in namespaces:
        items = [c for c in items if str(c.ns) in namespaces]
    if title:
        ns, text = split_title(title)
        items = [c for c in items if c.title == full_title(ns, text)]
    if user:
        items = [c for c in items if c.user == user]
    items, cont = _feed_window(req, "rc", "recentchanges", items, lambda c: c.rcid)
    out = []
    for c in items:
        row: dict[str, Any] = {"type": c.type}
        if "title" in rcprop:
            row.update(ns=c.ns, title=c.title)
        if "ids" in rcprop:
            row.update(pageid=c.pageid, revid=c.revid, old_revid=c.old_revid, rcid=c.rcid)
        if "sizes" in rcprop:
            row.update(oldlen=c.oldlen, newlen=c.newlen)
        if "user" in rcprop:
            row["user"] = c.user
        if "comment" in rcprop:
            row["comment"] = c.comment
        if "flags" in rcprop:
            row.update(new=c.type == "new", minor=False, bot=False)
        if "timestamp" in rcprop:
            row["timestamp"] = iso(c.timestamp)
        if "redirect" in rcprop:
            page = wiki.pages.get(split_title(c.title))
            row["redirect"] = page is not None and page.is_redirect  # false shown too
        if "loginfo" in rcprop and c.type == "log":
            row.update(logid=c.logid, logtype=c.logtype, logaction=c.logaction,
                       logparams=dict(c.logparams))
        if "sha1" in rcprop and c.sha1:
            row["sha1"] = c.sha1
        if "tags" in rcprop:
            row["tags"] = []
        out.append(row)
    return out, cont


def list_logevents(req: Request):
    wiki = req.ctx.wiki
    leprop = req.multi("leprop", {"ids", "title", "type", "user", "userid", "timestamp",
                                  "comment", "parsedcomment", "details", "tags"}, "logevents",
                       default="ids|title|type|user|timestamp|comment|details")
    letype = req.get("letype")
    action = req.get("leaction")
    title = req.get("letitle")
    items = [c for c in wiki.changes if c.type == "log"]
    if letype:
        if letype not in {"delete", "move", "upload", "block", "protect", "create", "patrol"}:
            raise ApiError("badvalue", f'Unrecognized value for parameter "letype": {letype}.')
        items = [c for c in items if c.logtype == letype]
    if action:
        items = [c for c in items if f"{c.logtype}/{c.logaction}" == action]
    if title:
        ns, text = split_title(title)
        items = [c for c in items if c.title == full_title(ns, text)]
    items, cont = _feed_window(req, "le", "logevents", items, lambda c: c.logid)
    out = []
    for c in items:
        row: dict[str, Any] = {}
        if "ids" in leprop:
            row.update(logid=c.logid, ns=c.ns, pageid=c.pageid, logpage=c.pageid)
        if "title" in leprop:
            row.update(ns=c.ns, title=c.title)
        if "details" in leprop:
            row["params"] = dict(c.logparams)
        if "type" in leprop:
            row.update(type=c.logtype, action=c.logaction)
        if "user" in leprop:
            row["user"] = c.user
        if "timestamp" in leprop:
            row["timestamp"] = iso(c.timestamp)
        if "comment" in leprop:
            row["comment"] = c.comment
        out.append(row)
    return out, cont


# -- meta modules -------------------------------------------------------------------------


def meta_siteinfo(req: Request) -> dict:
    wiki = req.ctx.wiki
    siprop = req.multi("siprop", {"general", "namespaces", "namespacealiases", "statistics",
                                  "interwikimap", "specialpagealiases", "magicwords",
                                  "usergroups", "extensions", "fileextensions", "rightsinfo",
                                  "restrictions", "languages", "skins", "extensiontags",
                                  "functionhooks", "showhooks", "variables", "protocols",
                                  "defaultoptions", "uploaddialog", "dbrepllag",
                                  "libraries", "languagevariants"}, "siteinfo",
                       default="general")
    base = wiki.require_base()
    out: dict[str, Any] = {}
    if "general" in siprop:
        out["general"] = {
            "mainpage": "Main Page", "base": f"{base}/wiki/Main_Page",
            "sitename": wiki.sitename, "mainpageisdomainroot": False, "logo": "",
            "generator": GENERATOR, "phpversion": "8.1.31", "phpsapi": "fpm-fcgi",
            "dbtype": "mysql", "dbversion": "10.6.20-MariaDB-log", "imagewhitelistenabled": True,
            "langconversion": True, "linkconversion": True, "titleconversion": True,
            "linkprefixcharset": "", "linkprefix": "", "linktrail": "/^([a-z]+)(.*)$/sD",
            "legaltitlechars": " %!\"$&'()*,\\-.\\/0-9:;=?@A-Z\\\\^_`a-z~\\x80-\\xFF+",
            "invalidusernamechars": "@:>=", "case": "first-letter", "lang": wiki.lang,
            "fallback": [], "rtl": False, "fallback8bitEncoding": "windows-1252",
            "readonly": False, "writeapi": True, "maxarticlesize": 2097152,
            "timezone": "UTC", "timeoffset": 0, "articlepath": "/wiki/$1",
            "scriptpath": "/w", "script": "/w/index.php", "variantarticlepath": False,
            "server": base, "servername": base.split("//", 1)[1].split(":")[0],
            "wikiid": f"{wiki.name}wiki", "time": iso(wiki.clock), "misermode": True,
            "uploadsenabled": True, "maxuploadsize": 5368709120, "minuploadchunksize": 1024,
            "thumblimits": [120, 150, 180, 200, 220, 250, 300, 400],
            "imagelimits": [{"width": 320, "height": 240}, {"width": 640, "height": 480},
                            {"width": 800, "height": 600}, {"width": 1024, "height": 768},
                            {"width": 1280, "height": 1024}, {"width": 2560, "height": 2048}],
            "favicon": f"{base}/favicon.ico", "centralidlookupprovider": "CentralAuth",
            "interwikimagic": True, "magiclinks": {}, "categorycollation": "uca-default",
        }
    if "namespaces" in siprop:
        namespaces = {}
        for num, name in NAMESPACES.items():
            item = {"id": num, "case": "first-letter", ("name" if req.fv2 else "*"): name,
                    "subpages": num % 2 == 1,
                    "content": num == 0, "nonincludable": False}
            if num == 6:
                item["canonical"] = "File"
            elif name:
                item["canonical"] = name
            namespaces[str(num)] = item
        out["namespaces"] = namespaces
    if "namespacealiases" in siprop:
        out["namespacealiases"] = [{"id": 6, "alias": "Image"}, {"id": 7, "alias": "Image talk"}]
    if "statistics" in siprop:
        articles = sum(1 for p in wiki.pages.values() if p.ns == 0 and not p.is_redirect)
        out["statistics"] = {"pages": len(wiki.pages), "articles": articles,
                             "edits": sum(len(p.revisions) for p in wiki.pages.values()),
                             "images": len(wiki.files), "users": len(wiki.users) + 1,
                             "activeusers": 1, "admins": 0, "jobs": 0}
    return out


def meta_userinfo(req: Request) -> dict:
    session = req.ctx.session
    uiprop = req.multi("uiprop", {"blockinfo", "hasmsg", "groups", "groupmemberships",
                                  "implicitgroups", "rights", "changeablegroups", "options",
                                  "editcount", "ratelimits", "email", "realname",
                                  "acceptlang", "registrationdate", "unreadcount",
                                  "centralids", "latestcontrib", "cancreateaccount"},
                       "userinfo")
    if session.user is None:
        info: dict[str, Any] = {"id": 0, "name": "127.0.0.1", "anon": True}
        groups, rights = ["*"], ["read", "edit", "createpage", "upload"]
    else:
        info = {"id": 1, "name": session.user}
        groups = ["*", "user", "autoconfirmed"] + (["bot"] if session.bot else [])
        rights = ["read", "edit", "createpage", "upload"] + (
            ["bot", "apihighlimits"] if session.bot else [])
    if "groups" in uiprop:
        info["groups"] = groups
    if "rights" in uiprop:
        info["rights"] = rights
    return {"userinfo": info}


def meta_tokens(req: Request) -> dict:
    types = req.multi("type", {"createaccount", "csrf", "deleteglobalaccount", "login",
                               "patrol", "rollback", "setglobalaccountstatus", "userrights",
                               "watch"}, "tokens", default="csrf")
    session = req.ctx.session
    tokens = {}
    for kind in types:
        if kind == "login":
            tokens["logintoken"] = session.login_token
        else:
            tokens[f"{kind}token"] = "+\\" if session.user is None else (
                secrets.token_hex(16) + "+\\")
    return {"tokens": tokens}


def meta_filerepoinfo(req: Request) -> dict:
    props = req.multi("friprop", None, "filerepoinfo")
    wiki = req.ctx.wiki
    repos = []
    for repo, local in ((wiki, True), (wiki.shared, False)):
        if repo is None:
            continue
        base = repo.require_base()
        info = {
            "name": repo.name, "displayname": repo.displayname,
            "rootUrl": f"{base}/images", "local": local, "url": f"{base}/images",
            "thumbUrl": f"{base}/images/thumb", "initialCapital": True,
            "descBaseUrl": f"{base}/wiki/File:", "scriptDirUrl": f"{base}/w",
            "favicon": f"{base}/favicon.ico", "canUpload": local,
        }
        if not local:
            info["apiurl"] = f"{base}/w/api.php"
            info["fetchDescription"] = True
        if props:
            info = {k: v for k, v in info.items() if k in props}
        repos.append(info)
    return {"repos": repos}


PROP_FUNCS = {"info": prop_info, "revisions": prop_revisions, "images": prop_images,
              "imageinfo": prop_imageinfo}
LIST_FUNCS = {"allpages": list_allpages, "recentchanges": list_recentchanges,
              "logevents": list_logevents}
META_FUNCS = {"siteinfo": meta_siteinfo, "userinfo": meta_userinfo, "tokens": meta_tokens,
              "filerepoinfo": meta_filerepoinfo}
