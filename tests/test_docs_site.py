"""The docs site builds with --strict, every link in it lands, and it loads nothing from outside.

mkdocs checks the Markdown's links and anchors itself (mkdocs.yml's ``validation``); these tests
read the built HTML as a browser would, so a link the theme or an extension writes is checked too.
"""

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent

# Tags and attributes that make a browser fetch something as the page loads (an <a> does not).
LOADING = {
    "script": ("src",),
    "link": ("href",),
    "img": ("src", "srcset"),
    "source": ("src", "srcset"),
    "iframe": ("src",),
    "video": ("src", "poster"),
    "audio": ("src",),
    "embed": ("src",),
    "object": ("data",),
    "image": ("href", "xlink:href"),
    "use": ("href", "xlink:href"),
}
CSS_URL = re.compile(r"""(?:url\(\s*['"]?|@import\s+['"])([^'")\s]+)""")


class Page(HTMLParser):
    """What a built page links to, what it loads, and the ids its anchors can land on."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.loads: list[str] = []
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("name"):
            self.ids.add(attrs["name"])
        if tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        for name in LOADING.get(tag, ()):
            if value := attrs.get(name):
                self.loads += [part.split()[0] for part in value.split(",") if part.strip()]
        if attrs.get("style"):
            self.styles.append(attrs["style"])
        self._in_style = tag == "style"

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)


def read_page(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def is_external(url: str) -> bool:
    """Return whether ``url`` names another origin (a scheme with a host, or ``//host``)."""
    parts = urlsplit(url)
    return bool(parts.netloc) or parts.scheme not in ("", "data", "blob")


def broken_links(site: Path) -> list[str]:
    """Return every link or load inside ``site`` whose file or anchor does not exist."""
    pages = {path: read_page(path) for path in site.rglob("*.html")}
    problems = []
    for path, page in pages.items():
        for url in page.links + page.loads:
            parts = urlsplit(url)
            if is_external(url) or parts.scheme in ("data", "blob"):
                continue
            if parts.path.startswith("/"):
                target = site / unquote(parts.path).lstrip("/")
            else:
                target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            where = f"{path.relative_to(site)}: {url}"
            if not target.is_file():
                problems.append(f"{where}: no such file")
            elif parts.fragment and target.suffix == ".html":
                if unquote(parts.fragment) not in pages[target.resolve()].ids:
                    problems.append(f"{where}: no such anchor")
    return problems


def external_loads(site: Path) -> list[str]:
    """Return every fetch from another origin that a page, style or image of ``site`` makes."""
    found = []
    for path in site.rglob("*.html"):
        page = read_page(path)
        urls = page.loads + [u for style in page.styles for u in CSS_URL.findall(style)]
        found += [f"{path.relative_to(site)}: {url}" for url in urls if is_external(url)]
        # Material fetches mermaid.js from a CDN when a page holds a diagram of that kind.
        if re.search(r'class="[^"]*\bmermaid\b', path.read_text(encoding="utf-8")):
            found.append(f"{path.relative_to(site)}: a mermaid diagram (its script is fetched)")
    for path in [*site.rglob("*.css"), *site.rglob("*.svg")]:
        text = path.read_text(encoding="utf-8")
        urls = CSS_URL.findall(text) + re.findall(r'(?:xlink:)?href="([^"]+)"', text)
        found += [f"{path.relative_to(site)}: {url}" for url in urls if is_external(url)]
    return found


def build(config: Path, site: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config)]
    return subprocess.run(
        [*command, "--site-dir", str(site)],
        cwd=ROOT,  # BENCHMARKS.md is included from the working directory (pymdownx.snippets)
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    result = build(ROOT / "mkdocs.yml", site)
    assert result.returncode == 0, result.stdout + result.stderr
    return site


def nav_pages(entries) -> list[str]:
    pages = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_every_page_in_the_navigation_is_built(site):
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages = nav_pages(config["nav"])

    assert sorted(pages) == sorted(
        str(path.relative_to(ROOT / "docs")) for path in (ROOT / "docs").rglob("*.md")
    )
    for page in pages:
        stem = page.removesuffix(".md")
        # mkdocs writes x.md to x/index.html, and an index.md to index.html beside it
        built = site / (f"{stem}.html" if Path(page).name == "index.md" else f"{stem}/index.html")
        assert built.is_file(), page


def test_every_link_and_anchor_in_the_site_lands(site):
    assert broken_links(site) == []


def test_the_site_loads_nothing_from_another_origin(site):
    assert external_loads(site) == []


def test_the_settings_and_the_benchmarks_are_on_their_pages(site):
    configuration = (site / "configuration" / "index.html").read_text()
    performance = (site / "performance" / "index.html").read_text()

    assert "<code>DATABASE_URL</code>" in configuration
    assert "<code>API_CALLS_PER_MINUTE</code>" in configuration
    assert "ETL, N = 1,000,000" in performance  # BENCHMARKS.md, included as it stands
    assert "<h1" not in performance.split('id="the-latest-figures"')[1]


@pytest.mark.parametrize(
    ("link", "problem"),
    [
        ("[gone](missing.md)", "missing.md"),
        ("[gone](guarantees.md#no-such-heading)", "no-such-heading"),
    ],
)
def test_a_link_that_does_not_land_fails_the_build(tmp_path, link, problem):
    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs)
    with (docs / "index.md").open("a") as page:
        page.write(f"\n{link}\n")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config["docs_dir"] = str(docs)
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))

    result = build(tmp_path / "mkdocs.yml", tmp_path / "site")

    assert result.returncode != 0
    assert problem in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ('<a href="other/#here">x</a>', ["index.html: other/#here: no such file"]),
        ('<a href="#nowhere">x</a><p id="here"></p>', ["index.html: #nowhere: no such anchor"]),
        (
            '<a href="#here">x</a><img src="a.svg"><p id="here"></p>',
            ["index.html: a.svg: no such file"],
        ),
        ('<a href="https://example.org/#x">x</a><p id="here"></p>', []),
    ],
)
def test_the_link_check_finds_a_missing_page_or_anchor(tmp_path, html, expected):
    (tmp_path / "index.html").write_text(html)

    assert broken_links(tmp_path) == expected


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ('<script src="https://cdn.example/x.js"></script>', ["https://cdn.example/x.js"]),
        ('<link rel="stylesheet" href="//fonts.example/css">', ["//fonts.example/css"]),
        ("<style>@import 'https://fonts.example/a.css';</style>", ["https://fonts.example/a.css"]),
        (
            '<div style="background: url(http://img.example/a.png)"></div>',
            ["http://img.example/a.png"],
        ),
        ('<pre class="mermaid">graph LR</pre>', ["a mermaid diagram (its script is fetched)"]),
        ('<a href="https://example.org/">a link loads nothing</a><img src="img/a.svg">', []),
    ],
)
def test_the_origin_check_finds_what_a_page_would_fetch(tmp_path, html, expected):
    (tmp_path / "index.html").write_text(html)

    assert external_loads(tmp_path) == [f"index.html: {url}" for url in expected]


def test_the_readme_starts_with_the_two_commands_and_its_links_land(site):
    readme = (ROOT / "README.md").read_text()
    commands = re.search(r"```sh\n(.*?)```", readme, re.S).group(1).splitlines()

    assert [line.split()[:2] for line in commands] == [["make", "run"], ["make", "test"]]
    assert len(readme.splitlines()) < 200
    for target in re.findall(r"\]\(([^)]+)\)", readme):
        path, _, anchor = target.partition("#")
        assert (ROOT / path).is_file(), target
        if anchor:
            page = Path(path).relative_to("docs").with_suffix("")
            built = site / page / "index.html" if page.name != "index" else site / f"{page}.html"
            assert anchor in read_page(built).ids, target
