"""``/docs`` and ``/redoc`` work offline: every script and style they load comes from the app.

The pages are read as a browser would: every ``src`` and ``href`` they reference is requested
from the app itself, and the vendored files are checked against the versions recorded for them.
"""

import hashlib
import json
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

STATIC = Path(__file__).resolve().parent.parent / "kasparro" / "static"
MANIFEST = STATIC / "vendor.json"
PAGES = {
    "/docs": {"swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "swagger-ui.css"},
    "/redoc": {"redoc.standalone.js"},
}
MIMETYPES = {".js": "text/javascript", ".css": "text/css"}


class References(HTMLParser):
    """Collect the URLs a page makes the browser fetch (scripts, styles, images, frames)."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag in ("script", "img", "iframe") and attributes.get("src"):
            self.urls.append(attributes["src"])
        if tag == "link" and attributes.get("href"):
            self.urls.append(attributes["href"])


def references(html: str) -> list[str]:
    parser = References()
    parser.feed(html)
    return parser.urls


@pytest.mark.parametrize("page", sorted(PAGES))
def test_docs_pages_load_every_asset_from_the_app_itself(client, page):
    response = client.get(page)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    urls = references(html)

    assert {Path(urlsplit(url).path).name for url in urls} == PAGES[page]
    for url in urls:
        absolute = urljoin(f"http://localhost{page}", url)
        assert urlsplit(absolute).netloc == "localhost", f"{page} loads {url} from elsewhere"
        asset = client.get(urlsplit(absolute).path)
        assert asset.status_code == 200, url
        assert asset.mimetype == MIMETYPES[Path(url).suffix], url
        assert len(asset.get_data()) > 10_000, url  # the real bundle, not a stub
        asset.close()
    assert "openapi.json" in html


def test_swagger_ui_does_not_call_the_online_validator(client):
    """Swagger UI would otherwise fetch a badge from validator.swagger.io for each page."""
    html = client.get("/docs").get_data(as_text=True)

    config = json.loads(html.split("var override_config = ", 1)[1].split(";", 1)[0])

    assert config["validatorUrl"] is None


@pytest.mark.parametrize("package", ["swagger-ui-dist", "redoc", "uplot"])
def test_vendored_files_are_the_recorded_versions(package):
    recorded = {p["name"]: p for p in json.loads(MANIFEST.read_text())["packages"]}[package]

    digests = {
        path: hashlib.sha256((STATIC / path).read_bytes()).hexdigest() for path in recorded["files"]
    }

    assert digests == recorded["files"]
    assert any(path.endswith("LICENSE") for path in recorded["files"])
    assert recorded["tarball"].endswith(f"/{package}-{recorded['version']}.tgz")
    assert recorded["integrity"].startswith("sha512-")
