"""The book's math renders without internet: MathJax ships with the build.

A one-page book is built with the project's own ``_config.yml``; the page is
opened in headless Chromium from disk (``file://``, so nothing can come from a
CDN) and the DOM must contain MathJax's typeset output (``mjx-container``)
instead of the raw ``\\( ... \\)`` source. Skipped only where no browser is
installed (``apt-get install -y chromium``).
"""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")

PAGE = r"""# Math offline

Inline $\mathbf{z} = \sigma(W[h_v; h_t])$ and a display:

$$
\mathcal{L} = -\frac{1}{N}\sum_{i=1}^{N} \log
\frac{e^{s_{ii}/\tau}}{\sum_j e^{s_{ij}/\tau}}
$$
"""


def _browser():
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.fixture(scope="module")
def built_page(tmp_path_factory):
    book = tmp_path_factory.mktemp("mathbook")
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config.pop("bibtex_bibfiles", None)
    config["only_build_toc_files"] = True
    config["execute"] = {"execute_notebooks": "off"}
    # The copied config's local extensions must still point at this repo.
    local = config.get("sphinx", {}).get("local_extensions") or {}
    for name, path in local.items():
        local[name] = str((ROOT / path).resolve())
    (book / "_config.yml").write_text(yaml.safe_dump(config))
    (book / "_toc.yml").write_text("format: jb-book\nroot: index\n")
    (book / "index.md").write_text(PAGE)
    jb = Path(sys.executable).with_name("jupyter-book")
    done = subprocess.run(
        [str(jb), "build", str(book), "--builder", "html"],
        capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return book / "_build" / "html"


def test_mathjax_is_shipped_with_the_build_not_fetched(built_page):
    html = (built_page / "index.html").read_text()
    assert (built_page / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert "_static/mathjax/tex-chtml.js" in html
    assert "cdn.jsdelivr.net/npm/mathjax" not in html


def test_math_is_typeset_in_a_browser_offline(built_page):
    browser = _browser()
    if browser is None:
        pytest.skip("no headless browser installed (apt-get install chromium)")
    url = (built_page / "index.html").as_uri()
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu",
         "--allow-file-access-from-files", "--virtual-time-budget=10000",
         "--dump-dom", url],
        capture_output=True, text=True, timeout=300)
    dom = done.stdout
    assert "<body" in dom, done.stderr[-2000:]
    # MathJax replaces each \( ... \) / \[ ... \] with an <mjx-container>.
    assert dom.count("<mjx-container") >= 2, (
        "math was not typeset: MathJax did not load from _static/")
    assert "\\(" not in dom.split("<body", 1)[1].split("<script", 1)[0]
