"""A fake MediaWiki (api.php, originals, thumbnails) for tests, served on 127.0.0.1.

    commons = FakeWiki(name="shared", sitename="Fake Commons")
    wiki = FakeWiki(shared=commons)
    wiki.add_file("Foo.jpg", data=jpeg_bytes)
    wiki.add_page("Article", images=["Foo.jpg", "Missing.png"])
    with FakeWikiServer(commons), FakeWikiServer(wiki, faults=Faults()) as server:
        site = mwclient.Site(server.host, path="/w/", scheme="http")
"""

from .faults import Faults, FileFault
from .model import FakeWiki
from .server import ApiRecord, FakeWikiServer

__all__ = ["ApiRecord", "FakeWiki", "FakeWikiServer", "Faults", "FileFault"]
