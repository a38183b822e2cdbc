"""The in-memory wiki behind the fake api.php: pages, files, revisions and the change feed.

A `FakeWiki` is plain data guarded by one lock; `api.py` reads it to answer api.php requests
and `server.py` serves its files. Two instances model a wiki and its shared repository, as
Commons is to Wikipedia: `FakeWiki(shared=commons)`.
"""

from __future__ import annotations

import hashlib
import io
import mimetypes
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

NAMESPACES = {
    -2: "Media", -1: "Special", 0: "", 1: "Talk", 2: "User", 3: "User talk", 4: "Project",
    5: "Project talk", 6: "File", 7: "File talk", 8: "MediaWiki", 9: "MediaWiki talk",
    10: "Template", 11: "Template talk", 12: "Help", 13: "Help talk", 14: "Category",
    15: "Category talk",
}
NS_ALIASES = {"image": 6, "image talk": 7}
FILE_NS = 6

# Extension → MIME type where the stdlib table lacks or misnames one.
EXTRA_MIME = {
    ".svg": "image/svg+xml", ".ogg": "application/ogg", ".oga": "audio/ogg",
    ".opus": "audio/ogg", ".webm": "video/webm", ".ogv": "video/ogg",
    ".djvu": "image/vnd.djvu", ".pdf": "application/pdf", ".webp": "image/webp",
    ".mid": "audio/midi", ".flac": "audio/x-flac", ".wav": "audio/wav", ".mp3": "audio/mpeg",
}


def iso(ts: datetime) -> str:
    """MediaWiki's API timestamp: UTC ISO 8601 with a Z."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ts_mw(ts: datetime) -> str:
    """MediaWiki's TS_MW timestamp (YYYYMMDDHHMMSS), used in continuation values."""
    return ts.astimezone(UTC).strftime("%Y%m%d%H%M%S")


def parse_ts(value: str) -> datetime:
    """Parse the timestamp forms api.php accepts (ISO 8601, TS_MW, Unix seconds)."""
    value = value.strip()
    if re.fullmatch(r"\d{14}", value):
        return datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    if re.fullmatch(r"\d{1,10}", value):
        return datetime.fromtimestamp(int(value), UTC)
    m = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.\d+)?Z?", value)
    if not m:
        raise ValueError(value)
    return datetime(*map(int, m.groups()), tzinfo=UTC)


def ucfirst(text: str) -> str:
    return text[:1].upper() + text[1:]


def split_title(raw: str) -> tuple[int, str]:
    """Normalise a title as MediaWiki does: underscores to spaces, collapsed whitespace,
    namespace prefix recognised (case-insensitively, 'Image:' is 'File:'), first letter upper.
    Returns (namespace, text without prefix); raises ValueError for an empty title."""
    text = re.sub(r"[ _]+", " ", raw).strip()
    ns = 0
    if ":" in text:
        prefix, rest = text.split(":", 1)
        key = prefix.strip().lower()
        for num, name in NAMESPACES.items():
            if name and name.lower() == key:
                ns, text = num, rest.strip()
                break
        else:
            if key in NS_ALIASES:
                ns, text = NS_ALIASES[key], rest.strip()
    if not text or any(c in text for c in "#<>[]|{}"):
        raise ValueError(raw)
    return ns, ucfirst(text)


def full_title(ns: int, text: str) -> str:
    return f"{NAMESPACES[ns]}:{text}" if ns else text


def dbkey(text: str) -> str:
    return text.replace(" ", "_")


def file_name(name: str) -> str:
    """A file's name as the wiki spells it, without 'File:' (accepts either form)."""
    ns, text = split_title(name if ":" in name else f"File:{name}")
    if ns != FILE_NS:
        ns, text = split_title(f"File:{name}")
    return text


def hash_path(name: str) -> str:
    """The 'a/ab/' part of an upload path: the MD5 of the file's DB key."""
    digest = hashlib.md5(dbkey(name).encode()).hexdigest()
    return f"{digest[0]}/{digest[:2]}/"


def url_encode(text: str) -> str:
    """wfUrlencode: MediaWiki keeps these characters literal in URLs."""
    return quote(dbkey(text), safe=";@$!*(),/~:")


def media_type(mime: str) -> str:
    major = mime.split("/")[0]
    if mime == "image/svg+xml":
        return "DRAWING"
    if mime in ("application/pdf", "image/vnd.djvu"):
        return "OFFICE"
    if mime == "application/ogg" or major == "audio":
        return "AUDIO"
    if major == "video":
        return "VIDEO"
    if major == "image":
        return "BITMAP"
    return "UNKNOWN"


def guess_mime(name: str) -> str:
    ext = ("." + name.rsplit(".", 1)[-1].lower()) if "." in name else ""
    return EXTRA_MIME.get(ext) or mimetypes.types_map.get(ext) or "application/octet-stream"


MAGIC = ((b"\x89PNG", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"))


def check_extension(name: str, data: bytes) -> None:
    """Refuse bytes of one image format under another's extension, as MediaWiki's upload does
    (`filetype-mime-mismatch`): a test cannot make a wiki state a real wiki never has."""
    detected = next((mime for magic, mime in MAGIC if data.startswith(magic)), None)
    expected = guess_mime(name)
    if detected and expected in dict(MAGIC).values() and detected != expected:
        raise ValueError(f'filetype-mime-mismatch: extension of "{name}" does not match'
                         f" the detected MIME type of the file ({detected})")


def measure(data: bytes, mime: str) -> tuple[int, int]:
    """Width and height as MediaWiki reports them (EXIF rotation applied); 0 when unknown."""
    if mime == "image/svg+xml":
        return _svg_size(data)
    if not mime.startswith("image/"):
        return 0, 0
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            orientation = im.getexif().get(0x0112, 1)
    except Exception:
        return 0, 0
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    return width, height


def _svg_size(data: bytes) -> tuple[int, int]:
    head = data[:4096].decode("utf-8", "replace")
    tag = re.search(r"<svg\b[^>]*>", head, re.S)
    if not tag:
        return 0, 0
    attrs = dict(re.findall(r'([\w:-]+)\s*=\s*["\']([^"\']*)["\']', tag.group(0)))

    def number(value: str | None) -> float | None:
        m = re.match(r"\s*([\d.]+)\s*(px)?\s*$", value or "")
        return float(m.group(1)) if m else None

    width, height = number(attrs.get("width")), number(attrs.get("height"))
    box = [float(v) for v in re.split(r"[\s,]+", attrs.get("viewBox", "").strip()) if v]
    if (width is None or height is None) and len(box) == 4 and box[2] and box[3]:
        if width is None and height is None:
            width, height = box[2], box[3]
        elif width is None:
            width = height * box[2] / box[3]
        else:
            height = width * box[3] / box[2]
    # MediaWiki's SVG handler falls back to 512x512 when it cannot tell.
    return round(width or 512), round(height or 512)


@dataclass
class Revision:
    revid: int
    parentid: int
    timestamp: datetime
    text: str
    user: str = "Example"
    comment: str = ""

    @property
    def sha1(self) -> str:
        return hashlib.sha1(self.text.encode()).hexdigest()

    @property
    def size(self) -> int:
        return len(self.text.encode())


@dataclass
class Page:
    pageid: int
    ns: int
    title: str  # without namespace prefix, spaces
    revisions: list[Revision] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # file names, no 'File:'
    redirect_to: str | None = None

    @property
    def full_title(self) -> str:
        return full_title(self.ns, self.title)

    @property
    def latest(self) -> Revision:
        return self.revisions[-1]

    @property
    def is_redirect(self) -> bool:
        return self.redirect_to is not None


@dataclass
class FileVersion:
    data: bytes
    mime: str
    timestamp: datetime
    width: int
    height: int
    user: str = "Example"
    comment: str = ""
    duration: float | None = None

    @property
    def sha1(self) -> str:
        return hashlib.sha1(self.data).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class FileRecord:
    name: str
    versions: list[FileVersion] = field(default_factory=list)  # oldest first

    @property
    def current(self) -> FileVersion:
        return self.versions[-1]


@dataclass
class Change:
    """One row of recentchanges; log entries (type 'log') are also the logevents rows."""

    rcid: int
    type: str  # edit | new | log
    ns: int
    title: str  # full title
    pageid: int
    timestamp: datetime
    revid: int = 0
    old_revid: int = 0
    oldlen: int = 0
    newlen: int = 0
    sha1: str | None = None
    logid: int | None = None
    logtype: str | None = None
    logaction: str | None = None
    logparams: dict = field(default_factory=dict)
    user: str = "Example"
    comment: str = ""


class FakeWiki:
    """An in-memory MediaWiki: pages (with the files they use), files and a change feed.

    Args:
        name: the file repository name reported in `imagerepository` and `filerepoinfo`
            ("local" for a wiki; a shared repository is conventionally "shared").
        sitename: `siteinfo` sitename.
        displayname: `filerepoinfo` displayname (defaults to the sitename).
        shared: the shared repository (another FakeWiki) whose files this wiki can use.
        start: the clock's start; every change advances it by `tick`.
    """

    def __init__(
        self,
        name: str = "local",
        sitename: str = "Fakepedia",
        displayname: str | None = None,
        shared: FakeWiki | None = None,
        lang: str = "en",
        start: datetime = datetime(2024, 1, 1, tzinfo=UTC),
        tick: timedelta = timedelta(seconds=1),
    ) -> None:
        self.name = name
        self.sitename = sitename
        self.displayname = displayname or sitename
        self.shared = shared
        self.lang = lang
        self.clock = start
        self.tick = tick
        self.lock = threading.RLock()
        self.pages: dict[tuple[int, str], Page] = {}  # (ns, title) → page
        self.deleted: dict[tuple[int, str], Page] = {}
        self.files: dict[str, FileRecord] = {}
        self.changes: list[Change] = []
        self.users: dict[str, tuple[str, bool]] = {}  # login name → (password, bot)
        self.base_url: str | None = None  # set by FakeWikiServer: http://127.0.0.1:PORT
        self._next_pageid = 1
        self._next_revid = 100
        self._next_rcid = 1000
        self._next_logid = 500

    # -- helpers ------------------------------------------------------------------

    def _stamp(self, timestamp: datetime | None = None) -> datetime:
        self.clock = timestamp or (self.clock + self.tick)
        return self.clock

    def _log(self, **kwargs) -> Change:
        change = Change(rcid=self._next_rcid, **kwargs)
        self._next_rcid += 1
        if change.type == "log":
            change.logid = self._next_logid
            self._next_logid += 1
        self.changes.append(change)
        return change

    @staticmethod
    def _text(images: list[str], redirect_to: str | None) -> str:
        if redirect_to is not None:
            return f"#REDIRECT [[{redirect_to}]]"
        return "Article text.\n" + "".join(f"[[File:{name}|thumb]]\n" for name in images)

    def _new_revision(self, page: Page, ts: datetime, comment: str = "") -> Revision:
        parent = page.revisions[-1].revid if page.revisions else 0
        rev = Revision(self._next_revid, parent, ts, self._text(page.images, page.redirect_to),
                       comment=comment)
        self._next_revid += 1
        page.revisions.append(rev)
        return rev

    def page(self, title: str, namespace: int | None = None) -> Page | None:
        ns, text = split_title(title)
        if namespace is not None and ns == 0:
            ns = namespace
        return self.pages.get((ns, text))

    def pages_sorted(self, ns: int, start: bytes | None = None,
                     desc: bool = False) -> Iterator[Page]:
        """The namespace's pages in DB-key byte order (as allpages lists them), from the first
        at or after `start` (at or before it when `desc`)."""
        pages = sorted((pg for pg in self.pages.values() if pg.ns == ns),
                       key=lambda pg: dbkey(pg.title).encode(), reverse=desc)
        for pg in pages:
            key = dbkey(pg.title).encode()
            if start is None or (key <= start if desc else key >= start):
                yield pg

    def page_by_id(self, pageid: int) -> Page | None:
        for page in self.pages.values():
            if page.pageid == pageid:
                return page
        return None

    def add_user(self, name: str, password: str, bot: bool = True) -> None:
        """A bot password login ('User@botname'); bots get the API's high limits."""
        self.users[name] = (password, bot)

    # -- pages ------------------------------------------------------------------------

    def add_page(
        self,
        title: str,
        images: list[str] = (),
        redirect: bool | str = False,
        namespace: int = 0,
        timestamp: datetime | None = None,
    ) -> Page:
        """Create a page (a 'new' change). `redirect` may be True or the target title."""
        with self.lock:
            ns, text = split_title(title)
            if namespace and not ns:
                ns = namespace
            if (ns, text) in self.pages:
                raise ValueError(f"page exists: {title}")
            target = None
            if redirect:
                target = redirect if isinstance(redirect, str) else "Main Page"
            page = Page(self._next_pageid, ns, text, redirect_to=target,
                        images=self._image_list(images))
            self._next_pageid += 1
            ts = self._stamp(timestamp)
            rev = self._new_revision(page, ts, "Created page")
            self.pages[(ns, text)] = page
            self._log(type="new", ns=ns, title=page.full_title, pageid=page.pageid,
                      timestamp=ts, revid=rev.revid, newlen=rev.size, sha1=rev.sha1,
                      comment=rev.comment)
            return page

    @staticmethod
    def _image_list(images) -> list[str]:
        names = {file_name(name) for name in images}
        return sorted(names, key=lambda n: dbkey(n).encode())

    def edit_page(self, title: str, images: list[str] | None = None,
                  redirect: bool | str | None = None,
                  timestamp: datetime | None = None) -> Revision:
        """A new revision (an 'edit' change) with a new image list."""
        with self.lock:
            page = self._get(title)
            old = page.latest
            if images is not None:
                page.images = self._image_list(images)
            if redirect is not None:
                page.redirect_to = (redirect if isinstance(redirect, str) else "Main Page"
                                    ) if redirect else None
            ts = self._stamp(timestamp)
            rev = self._new_revision(page, ts, "Edited")
            self._log(type="edit", ns=page.ns, title=page.full_title, pageid=page.pageid,
                      timestamp=ts, revid=rev.revid, old_revid=old.revid, oldlen=old.size,
                      newlen=rev.size, sha1=rev.sha1, comment=rev.comment)
            return rev

    def _get(self, title: str) -> Page:
        page = self.page(title)
        if page is None:
            raise KeyError(title)
        return page

    def delete_page(self, title: str, timestamp: datetime | None = None) -> None:
        """Delete a page (log delete/delete); `restore_page` brings it back."""
        with self.lock:
            page = self._get(title)
            del self.pages[(page.ns, page.title)]
            self.deleted[(page.ns, page.title)] = page
            self._log(type="log", ns=page.ns, title=page.full_title, pageid=page.pageid,
                      timestamp=self._stamp(timestamp), logtype="delete", logaction="delete",
                      comment="Deleted")

    def restore_page(self, title: str, timestamp: datetime | None = None) -> Page:
        """Undelete a page, keeping its page id (log delete/restore)."""
        with self.lock:
            ns, text = split_title(title)
            page = self.deleted.pop((ns, text))
            self.pages[(ns, text)] = page
            self._log(type="log", ns=ns, title=page.full_title, pageid=page.pageid,
                      timestamp=self._stamp(timestamp), logtype="delete", logaction="restore",
                      logparams={"count": {"revisions": len(page.revisions), "files": 0}})
            return page

    def move_page(self, old: str, new: str, leave_redirect: bool = True,
                  timestamp: datetime | None = None) -> Page:
        """Rename a page (log move/move); the page keeps its id, and with `leave_redirect`
        the old title becomes a new redirect page."""
        with self.lock:
            page = self._get(old)
            ns, text = split_title(new)
            if (ns, text) in self.pages:
                raise ValueError(f"target exists: {new}")
            old_title = page.full_title
            del self.pages[(page.ns, page.title)]
            page.ns, page.title = ns, text
            self.pages[(ns, text)] = page
            ts = self._stamp(timestamp)
            self._new_revision(page, ts, f"Moved [[{old_title}]] to [[{page.full_title}]]")
            params: dict = {"target_ns": ns, "target_title": page.full_title}
            if not leave_redirect:
                params["suppressredirect"] = True
            self._log(type="log", ns=split_title(old)[0], title=old_title, pageid=page.pageid,
                      timestamp=ts, logtype="move", logaction="move", logparams=params)
            if leave_redirect:
                o_ns, o_text = split_title(old)
                redirect = Page(self._next_pageid, o_ns, o_text, redirect_to=page.full_title)
                self._next_pageid += 1
                self._new_revision(redirect, ts, "Moved")
                self.pages[(o_ns, o_text)] = redirect
            return page

    # -- files ----------------------------------------------------------------------

    def add_file(
        self,
        name: str,
        data: bytes,
        mime: str | None = None,
        repo: str = "local",
        width: int | None = None,
        height: int | None = None,
        duration: float | None = None,
        timestamp: datetime | None = None,
    ) -> FileRecord:
        """Upload a new file. `repo="shared"` puts it in the shared repository instead.
        Width and height are measured with Pillow (0 when not an image) unless given."""
        if repo != "local":
            if self.shared is None:
                raise ValueError("this wiki has no shared repository")
            return self.shared.add_file(name, data, mime, "local", width, height, duration,
                                        timestamp)
        with self.lock:
            name = file_name(name)
            if name in self.files:
                raise ValueError(f"file exists: {name}")
            record = FileRecord(name)
            self.files[name] = record
            self._add_version(record, data, mime, width, height, duration, timestamp, "upload")
            return record

    def upload_file(self, name: str, data: bytes, mime: str | None = None,
                    width: int | None = None, height: int | None = None,
                    duration: float | None = None,
                    timestamp: datetime | None = None) -> FileRecord:
        """Upload a file, or a new version of an existing one (log upload/overwrite)."""
        with self.lock:
            name = file_name(name)
            record = self.files.get(name)
            if record is None:
                return self.add_file(name, data, mime, "local", width, height, duration,
                                     timestamp)
            self._add_version(record, data, mime, width, height, duration, timestamp,
                              "overwrite")
            return record

    def revert_file(self, name: str, version: int = -2,
                    timestamp: datetime | None = None) -> FileRecord:
        """Re-upload an older version (`versions[version]`) as the current one (upload/revert)."""
        with self.lock:
            record = self.files[file_name(name)]
            old = record.versions[version]
            self._add_version(record, old.data, old.mime, old.width, old.height, old.duration,
                              timestamp, "revert")
            return record

    def _add_version(self, record, data, mime, width, height, duration, timestamp, action):
        if mime is None:  # a test that names the mime models a wiki or server gone odd
            check_extension(record.name, data)
        mime = mime or guess_mime(record.name)
        if width is None or height is None:
            width, height = measure(data, mime)
        ts = self._stamp(timestamp)
        version = FileVersion(data, mime, ts, width, height, duration=duration)
        record.versions.append(version)
        key = (FILE_NS, record.name)
        page = self.pages.get(key)
        if page is None:
            page = Page(self._next_pageid, FILE_NS, record.name)
            self._next_pageid += 1
            self.pages[key] = page
        self._new_revision(page, ts, "Uploaded")
        self._log(type="log", ns=FILE_NS, title=page.full_title, pageid=page.pageid,
                  timestamp=ts, logtype="upload", logaction=action,
                  logparams={"img_sha1": version.sha1, "img_timestamp": iso(ts)})

    def delete_file(self, name: str, timestamp: datetime | None = None) -> None:
        """Delete a file, all its versions and its description page (log delete/delete)."""
        with self.lock:
            name = file_name(name)
            del self.files[name]
            page = self.pages.pop((FILE_NS, name), None)
            self._log(type="log", ns=FILE_NS, title=f"File:{name}",
                      pageid=page.pageid if page else 0, timestamp=self._stamp(timestamp),
                      logtype="delete", logaction="delete")

    def find_file(self, name: str) -> tuple[FileRecord, FakeWiki] | None:
        """The file and the wiki holding it: this one first, then the shared repository."""
        name = file_name(name)
        if name in self.files:
            return self.files[name], self
        if self.shared is not None and name in self.shared.files:
            return self.shared.files[name], self.shared
        return None

    # -- URLs -------------------------------------------------------------------------

    def require_base(self) -> str:
        if not self.base_url:
            raise RuntimeError(f"wiki {self.name!r} is not served (start its FakeWikiServer)")
        return self.base_url

    def file_url(self, name: str) -> str:
        return f"{self.require_base()}/images/{hash_path(name)}{url_encode(name)}"

    def thumb_url(self, name: str, thumb_name: str) -> str:
        return (f"{self.require_base()}/images/thumb/{hash_path(name)}{url_encode(name)}/"
                f"{url_encode(thumb_name)}")

    def page_url(self, title: str) -> str:
        return f"{self.require_base()}/wiki/{url_encode(title)}"
