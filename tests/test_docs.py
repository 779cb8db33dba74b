"""The docs cannot rot: the site builds in strict mode, every public name has an entry in the API
reference, every page's code runs (the tutorials, getting started, the home page, the README), the
benchmark pages are what their JSON gives, the README stays a product page, and the built site
works in a real browser."""

import glob
import importlib
import os
import re
import shutil
import subprocess
import sys

import docs_code
import pytest
from test_api import PUBLIC_MODULES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES_WITH_CODE = sorted(
    glob.glob(os.path.join(ROOT, "docs", "tutorials", "*.md"))
    + [os.path.join(ROOT, "docs", name) for name in ("getting-started.md", "index.md")]
    + [os.path.join(ROOT, "README.md")]
)


def test_benchmark_pages_match_their_json():
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "tables.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_api_index_lists_every_name_of_jaxnn():
    import jaxnn

    with open(os.path.join(ROOT, "docs", "api", "index.md")) as f:
        index = f.read()
    missing = [name for name in jaxnn.__all__ if f"`jaxnn.{name}`" not in index]
    assert not missing, missing


def test_every_public_module_has_an_api_page():
    text = "".join(open(p).read() for p in glob.glob(os.path.join(ROOT, "docs", "api", "*.md")))
    for module in PUBLIC_MODULES:
        documented = f"::: {module}" in text or module == "jaxnn"
        if module == "jaxnn.train":  # documented module by module
            documented = all(f"::: jaxnn.train.{m}" in text for m in ("fit", "step", "optim", "evaluate"))
        assert documented, f"{module} has no API page (add '::: {module}' to a page of docs/api/)"


def test_every_figure_appears_on_a_page():
    """A PNG the repository keeps under docs/ that no page shows is a file the site ships for nobody."""
    text = "".join(
        open(p, encoding="utf-8").read()
        for p in glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True)
    )
    text += open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    tracked = subprocess.run(
        ["git", "ls-files", "docs"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    orphans = [
        path
        for path in tracked
        if path.endswith(".png") and "/screenshots/" not in path and path[len("docs/") :] not in text
    ]
    assert not orphans, orphans


LAB_WORDS = re.compile(r"slow phase|\blent\b|this session|no gpu was|issue \d+|\bH200\b", re.I)


def test_the_readme_is_a_product_page():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    assert len(readme.splitlines()) <= 200
    assert not LAB_WORDS.search(readme), LAB_WORDS.search(readme).group(0)
    assert "pytest -q tests --data-dir" in readme  # the test command CI runs
    assert "../shared" not in readme.replace("../shared/data", "")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    mkdocs = shutil.which("mkdocs")
    if mkdocs is None:
        pytest.fail("mkdocs is missing: pip install -e '.[docs]'")
    folder = tmp_path_factory.mktemp("site")
    out = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(folder)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    return str(folder)


@pytest.mark.slow
def test_every_tutorial_and_concept_page_links_to_the_api(site):
    """A reader meets a name in the prose and can open its reference (the site's navigation aside)."""
    unlinked = []
    for page in glob.glob(os.path.join(site, "tutorials", "*", "index.html")) + glob.glob(
        os.path.join(site, "concepts", "*", "index.html")
    ):
        html = open(page, encoding="utf-8").read()
        article = html[html.index("<article") : html.index("</article>")]
        if not re.search(r'href="(\.\./)+api/', article):
            unlinked.append(os.path.relpath(page, site))
    assert not unlinked, unlinked


@pytest.mark.slow
def test_every_public_name_has_an_entry_in_the_built_reference(site):
    html = "".join(
        open(p, encoding="utf-8").read()
        for p in glob.glob(os.path.join(site, "api", "**", "*.html"), recursive=True)
    )
    missing = []
    for name in PUBLIC_MODULES:
        module = importlib.import_module(name)
        for attr in module.__all__:
            # documented under its own module, which may be a submodule of `name` (jaxnn.train.fit.fit)
            anchor = re.compile(rf'id="{re.escape(name)}(\.[a-z_]+)*\.{re.escape(attr)}"')
            if not anchor.search(html):
                missing.append(f"{name}.{attr}")
    assert not missing, missing


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda p: os.path.relpath(p, ROOT))
def test_the_code_of_each_page_runs(page, data_root, tmp_path):
    out = docs_code.run(page, data_root, cwd=str(tmp_path))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    # a tutorial shows what each block prints (python tests/docs_code.py PAGE --write refreshes it)
    problems = docs_code.differences(page, out.stdout, every_output="/tutorials/" in page)
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_the_site_in_a_real_browser(site, tmp_path):
    import docs_browser

    if not os.path.exists(docs_browser.CHROMIUM):
        pytest.fail("chromium is missing (Debian: apt-get install chromium); .ci/run installs it")
    # the README's screenshots are these pages as this test sees them: taken anew on every run
    shots = os.path.join(ROOT, "docs", "screenshots")
    found = docs_browser.check(site, screenshots=shots)
    for name in docs_browser.PAGES:
        page = found[name]
        assert page["code_blocks"] >= 1, (name, page)
        assert page["images_loaded"] == page["images"], (name, page)
        assert not page["console_errors"], (name, page["console_errors"])
        assert not page["failed_requests"], (name, page["failed_requests"])
    for name in docs_browser.MATH_PAGES:  # every formula rendered, no TeX left as text
        page = found[name]
        assert page["math"] >= 1 and page["math_rendered"] == page["math"], (name, page)
        assert not page["raw_tex"], (name, page["raw_tex"])
    assert found["tutorial"]["images"] >= 1
    for name in ("home", "tutorial"):  # code lines within the column
        assert found[name]["code_blocks_scrolling"] == 0, (name, found[name])
    for section, least in (("tutorials", 13), ("api", 18)):  # code within the column, every formula rendered
        pages = found[f"{section} pages"]
        assert len(pages) >= least, pages
        assert not {path: p for path, p in pages.items() if p["scrolling"] or p["rendered"] != p["math"]}
    assert any("value_and_grad" in hit for hit in found["search"]), found["search"][:3]
    for name in docs_browser.SCREENSHOTS:
        assert os.path.getsize(os.path.join(shots, f"{name}.png")) > 10_000, name
