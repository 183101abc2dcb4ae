"""Open the built book in headless Chromium and list what a reader would find broken.

``render`` runs Debian's Chromium once per page (the DOM after scripts ran, and a
screenshot); ``page_problems`` reads that DOM: math MathJax did not typeset, raw LaTeX or MyST
roles left in the text, images whose file is missing or unreadable, execution errors in the
outputs, internal links to a page or anchor that does not exist, and visible code or text
blocks whose lines run past the page's column (the browser measures them: a probe script marks
every shown ``<pre>`` that would need a horizontal scroll bar).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

from bs4 import BeautifulSoup

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
HOW_TO_ENABLE = ("install Chromium (Debian/Ubuntu: `apt-get install -y chromium`; `make test` "
                 "does this itself when run as root) or point CHROMIUM at a Chrome binary")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
         "--hide-scrollbars", "--virtual-time-budget=15000")
RAW_TEX = re.compile(r"\\(?:[a-zA-Z]{2,}|\(|\[)|(?<![\\$])\$[^$\s][^$\n]*\$")
RAW_MYST = re.compile(r"\{(?:glue|glue:\w+|cite|cite:\w+|ref|numref|eq|doc)\}`")
EXTERNAL = ("http:", "https:", "mailto:", "javascript:", "data:")


def find_chromium() -> str | None:
    """The Chromium binary: ``$CHROMIUM`` if set, else the first of CHROMIUM_NAMES on PATH."""
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"])
    return next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)


OVERFLOW_PROBE = """<script>
window.addEventListener("load", () => setTimeout(() => {
  for (const pre of document.querySelectorAll("main pre")) {
    const shown = pre.checkVisibility ? pre.checkVisibility() : pre.offsetParent !== null;
    if (shown && pre.scrollWidth > pre.clientWidth + 1) {
      pre.setAttribute("data-overflow", String(pre.scrollWidth - pre.clientWidth));
    }
  }
}, 500));
</script>"""
"""Marks each shown ``<pre>`` of the page's main column whose content is wider than the block
(``data-overflow``: by how many pixels); a folded cell's code is not shown, so it is not
marked."""


def render(chromium: str, page: Path, screenshot: Path) -> str:
    """The page's DOM after its scripts (MathJax, and :data:`OVERFLOW_PROBE`) ran, and a
    screenshot 1280 px wide and about as tall as the page (estimated from the page's HTML) to
    ``screenshot``: one Chromium run, on a copy of the page beside it with the probe added."""
    html = page.read_text(encoding="utf-8")
    probe = page.with_name(f".probe-{page.name}")
    probe.write_text(html.replace("</body>", OVERFLOW_PROBE + "</body>", 1), encoding="utf-8")
    try:
        return _chromium(chromium, probe, f"--window-size=1280,{page_height(html)}",
                         "--dump-dom", f"--screenshot={screenshot}")
    finally:
        probe.unlink()


def _chromium(chromium: str, page: Path, *args: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [chromium, *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


def page_height(dom: str) -> int:
    """A rough page height in pixels for the screenshot window: text lines plus figures."""
    soup = BeautifulSoup(dom, "html.parser")
    main = soup.find("main") or soup
    text = main.get_text(" ", strip=True)
    return int(min(20000, 900 + 2.2 * len(text) / 6 + 550 * len(main.find_all("img"))))


def page_problems(page: Path, dom: str) -> list[str]:
    """What is broken on ``page`` (a built HTML file) given its DOM as rendered by Chromium."""
    soup = BeautifulSoup(dom, "html.parser")
    problems = []
    for el in soup.select(".math"):
        if el.find("mjx-container") is None:
            problems.append(f"math not typeset: {el.get_text()[:60]!r}")
    for el in soup(["script", "style", "pre", "code", "mjx-container", "noscript", "textarea"]):
        el.decompose()
    for el in soup.select(".math, .highlight"):
        el.decompose()
    text = soup.get_text(" ")
    problems += [f"raw LaTeX in text: {m.group(0)[:60]!r}" for m in RAW_TEX.finditer(text)]
    problems += [f"unrendered MyST role: {m.group(0)!r}" for m in RAW_MYST.finditer(text)]
    soup = BeautifulSoup(dom, "html.parser")
    for img in soup.find_all("img"):
        problems += _image_problems(page, img.get("src", ""))
    for el in soup.select(".traceback, .output.error"):
        problems.append(f"execution error output: {el.get_text()[:80]!r}")
    if "Traceback (most recent call last)" in soup.get_text():
        problems.append("execution error output: a Python traceback")
    for a in soup.find_all("a", href=True):
        problems += _link_problems(page, a["href"])
    for pre in soup.select("pre[data-overflow]"):
        widest = max(pre.get_text().splitlines() or [""], key=len)
        problems.append(f"a line runs {pre['data-overflow']} px past the column: {widest[:70]!r}")
    return problems


def _image_problems(page: Path, src: str) -> list[str]:
    if not src or src.startswith(EXTERNAL):
        return [] if src else ["image without src"]
    path = (page.parent / unquote(urlsplit(src).path)).resolve()
    if not path.is_file() or path.stat().st_size == 0:
        return [f"missing image: {src}"]
    if path.suffix.lower() != ".svg":
        from PIL import Image

        try:
            with Image.open(path) as im:
                im.verify()
        except Exception as err:  # noqa: BLE001 - any decoding failure is the finding
            return [f"unreadable image {src}: {err}"]
    return []


def _link_problems(page: Path, href: str) -> list[str]:
    if href.startswith(EXTERNAL) or href in ("#", ""):
        return []
    parts = urlsplit(href)
    target = (page.parent / unquote(parts.path)).resolve() if parts.path else page.resolve()
    if target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        return [f"broken link {href!r}: no file {target}"]
    if parts.fragment and target.suffix == ".html" and parts.fragment not in _ids(target):
        return [f"broken link {href!r}: no anchor #{parts.fragment}"]
    return []


@lru_cache(maxsize=None)
def _ids(html_file: Path) -> frozenset[str]:
    soup = BeautifulSoup(html_file.read_text(encoding="utf-8"), "html.parser")
    return frozenset([el["id"] for el in soup.find_all(id=True)]
                     + [el["name"] for el in soup.find_all("a", attrs={"name": True})])
