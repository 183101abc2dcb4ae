"""The book as readers see it: it builds with zero warnings, and every page renders in headless
Chromium with typeset math, its figures, no error output and no broken internal link.

Screenshots of each page are kept under ``_build/screenshots/``. Without Chromium the browser
test is skipped with a message saying how to enable it; the checker itself is tested on
hand-made pages below, so it is known to fail where it should.
"""
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from utils.training.runs import REPO_ROOT

import browser  # tests/browser.py (pytest puts tests/ on the path)

HTML = REPO_ROOT / "_build" / "html"
SCREENSHOTS = REPO_ROOT / "_build" / "screenshots"
JUPYTER_BOOK = Path(sys.executable).parent / "jupyter-book"


@pytest.fixture(scope="module")
def built_book():
    """``jupyter-book build --all -W -n --keep-going .`` from the committed notebooks, into an
    emptied ``_build/html`` (so no page of an older build is checked)."""
    shutil.rmtree(HTML, ignore_errors=True)
    proc = subprocess.run([str(JUPYTER_BOOK), "build", "--all", "-W", "-n", "--keep-going", "."],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "WARNING" not in log, [line for line in log.splitlines() if "WARNING" in line]
    return HTML


def book_pages(root: Path) -> list[Path]:
    skip = ("_static", "_sources", "_images")
    return sorted(p for p in root.rglob("*.html") if not p.relative_to(root).parts[0] in skip)


def test_every_page_renders_in_chromium(built_book):
    chromium = browser.find_chromium()
    if chromium is None:
        pytest.skip(f"browser check skipped: no Chromium found; to enable it, {browser.HOW_TO_ENABLE}")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    pages = [p for p in book_pages(built_book) if p.name != "index.html"]  # index: a redirect

    def check(page):
        shot = SCREENSHOTS / ("__".join(page.relative_to(built_book).with_suffix(".png").parts))
        dom = browser.render(chromium, page, shot)
        return page, dom, browser.page_problems(page, dom)

    with ThreadPoolExecutor(max_workers=2) as pool:
        rendered = list(pool.map(check, pages))
    problems = {str(p.relative_to(built_book)): probs for p, _, probs in rendered if probs}
    assert not problems, problems
    doms = {p.relative_to(built_book).as_posix(): dom for p, dom, _ in rendered}
    for name, dom in doms.items():
        if name.startswith("notebooks/"):
            assert dom.count("<img") >= 1, f"{name}: no figure"
            assert "mjx-container" in dom, f"{name}: no typeset math"
    assert "mjx-container" in doms["book/intro.html"]
    assert all((SCREENSHOTS / f"{name.replace('/', '__')[:-5]}.png").stat().st_size > 10_000
               for name in doms)


# The checker on hand-made pages: each kind of breakage is found, and a sound page passes.

def _page(tmp_path, body):
    (tmp_path / "fig.png").write_bytes(_png())
    page = tmp_path / "page.html"
    page.write_text(f'<html><body><main><h1 id="top">T</h1>{body}</main></body></html>')
    return page


def _png():
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="PNG")
    return buf.getvalue()


SOUND = ('<span class="math"><mjx-container>x</mjx-container></span> text '
         '<img src="fig.png"> <a href="page.html#top">up</a> <a href="https://x.org/a">out</a>'
         '<pre>$not math in code$ \\lambda</pre>')


def test_checker_passes_a_sound_page(tmp_path):
    page = _page(tmp_path, SOUND)
    assert browser.page_problems(page, page.read_text()) == []


@pytest.mark.parametrize("broken, finding", [
    ('<span class="math notranslate">\\(\\lambda\\)</span>', "math not typeset"),
    ("<p>the threshold $2/\\eta$ here</p>", "raw LaTeX"),
    ("<p>see {glue:text}`first_crossing`</p>", "unrendered MyST role"),
    ('<img src="missing.png">', "missing image"),
    ('<img src="page.html">', "unreadable image"),
    ('<div class="output traceback">ZeroDivisionError</div>', "execution error"),
    ('<a href="nowhere.html">x</a>', "broken link"),
    ('<a href="page.html#nope">x</a>', "no anchor #nope"),
    ('<pre data-overflow="40">x = 1  # a line wider than its block</pre>', "past the column"),
])
def test_checker_finds_each_kind_of_breakage(tmp_path, broken, finding):
    page = _page(tmp_path, SOUND + broken)
    problems = browser.page_problems(page, page.read_text())
    assert len(problems) == 1 and finding in problems[0], problems


def test_the_probe_marks_a_cut_off_line_and_not_a_folded_one(tmp_path):
    """In Chromium, a shown code block narrower than its line is marked; the same block inside
    a closed <details> (a folded cell) is not, nor is a short line."""
    chromium = browser.find_chromium()
    if chromium is None:
        pytest.skip(f"no Chromium: {browser.HOW_TO_ENABLE}")
    wide = "x = " + "1 + " * 60 + "1"
    page = tmp_path / "probe.html"
    page.write_text(
        '<html><body><main style="width:300px">'
        f'<pre id="cut">{wide}</pre><pre id="short">x = 1</pre>'
        f'<details><summary>code</summary><pre id="folded">{wide}</pre></details>'
        "</main></body></html>")
    dom = browser.render(chromium, page, tmp_path / "shot.png")
    from bs4 import BeautifulSoup

    marked = [pre["id"] for pre in BeautifulSoup(dom, "html.parser").select("pre[data-overflow]")]
    assert marked == ["cut"]
    assert any("past the column" in p for p in browser.page_problems(page, dom))
    assert not page.with_name(".probe-probe.html").exists()


def test_every_notebook_page_has_launch_buttons(built_book):
    """Binder opens the page's own notebook; the repository button points at _config.yml's URL."""
    import yaml
    from bs4 import BeautifulSoup

    config = yaml.safe_load((REPO_ROOT / "_config.yml").read_text())
    repo = config["repository"]["url"]
    slug = repo.removeprefix("https://github.com/")
    for notebook in [*REPO_ROOT.glob("notebooks/[0-9][0-9]_*.ipynb"), *REPO_ROOT.glob("book/*.ipynb")]:
        rel = notebook.relative_to(REPO_ROOT)
        page = built_book / rel.with_suffix(".html")
        hrefs = {a["href"] for a in BeautifulSoup(page.read_text(), "html.parser").find_all("a", href=True)}
        binder = f"https://mybinder.org/v2/gh/{slug}/{config['repository']['branch']}?urlpath=lab/tree/{rel.as_posix()}"
        assert binder in hrefs, f"{rel}: no Binder button for its notebook"
        assert repo in hrefs, f"{rel}: no repository button"
