"""The built docs site in a real browser (Debian's Chromium, headless, driven by Playwright): pages
render with their code blocks and figures, log no console error, fetch nothing that answers 4xx or
5xx, show their mathematics rendered by KaTeX (no raw TeX left) and the home page's and the tutorial's
code without a scroll bar (what a block prints, in its Output block, may scroll: a wide table stays a
table), and the search finds an API name.

    python tests/docs_browser.py site --screenshots docs/screenshots   # check, and take the screenshots
"""

import argparse
import contextlib
import functools
import http.server
import os
import shutil
import threading

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
FLAGS = [  # no sandbox (root in CI), no background traffic (the machine has no network)
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
PAGES = {"home": "", "api": "api/layers/", "activations": "api/activations/", "tutorial": "tutorials/cnn/"}
MATH_PAGES = ("api", "activations", "tutorial")  # the pages of PAGES whose mathematics is checked rendered
SCREENSHOTS = ("home", "api", "tutorial")  # the README's pictures of the site
WIDE_CODE = "article .highlight:not(:has(.filename)) pre > code"  # code blocks, not their Output blocks


@contextlib.contextmanager
def serve(site):
    """An HTTP server on a free local port serving the folder `site`; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=site)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _scrolling(page):
    """How many code blocks on the page are wider than the column (at the page's width)."""
    # a function's source, folded away in a <details>, is not counted: it scrolls only once opened
    wide = "els => els.filter(e => !e.closest('details') && e.scrollWidth > e.clientWidth + 1).length"
    return page.eval_on_selector_all(WIDE_CODE, wide)


def section_paths(site, section):
    """The pages of one section of the built site ("tutorials", "api"), as paths under its root."""
    folder = os.path.join(site, section)
    names = sorted(name for name in os.listdir(folder) if os.path.isdir(os.path.join(folder, name)))
    return [f"{section}/{name}/" for name in names]


def check(site, screenshots=None):
    """Open the pages of PAGES and search the site; return a dict of what was found per page (code
    blocks, images and how many loaded, console errors, failed requests) and the search's hits."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    found = {}
    with serve(site) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            for name, path in PAGES.items():
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                errors, failed = [], []
                page.on(
                    "console", lambda m, errors=errors: errors.append(m.text) if m.type == "error" else None
                )
                page.on("pageerror", lambda e, errors=errors: errors.append(str(e)))
                page.on(
                    "response",
                    lambda r, failed=failed: (
                        failed.append(f"{r.status} {r.url}") if r.status >= 400 else None
                    ),
                )
                page.goto(base + path, wait_until="networkidle")
                images = page.eval_on_selector_all(
                    "article img", "els => els.map(e => e.complete && e.naturalWidth > 0)"
                )
                math = page.eval_on_selector_all(
                    "article .arithmatex", "els => els.map(e => e.querySelector('.katex') !== null)"
                )
                text = page.inner_text("article")
                scrolling = _scrolling(page)
                found[name] = {
                    "title": page.title(),
                    "math": len(math),
                    "math_rendered": sum(math),
                    "raw_tex": [cmd for cmd in ("\\frac", "\\partial", "\\sum", "\\begin") if cmd in text],
                    "code_blocks": page.locator("article pre code").count(),
                    "code_blocks_scrolling": scrolling,
                    "images": len(images),
                    "images_loaded": sum(images),
                    "console_errors": errors,
                    "failed_requests": failed,
                }
                if screenshots and name in SCREENSHOTS:
                    os.makedirs(screenshots, exist_ok=True)
                    page.screenshot(path=os.path.join(screenshots, f"{name}.png"))
                page.close()
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            for section in ("tutorials", "api"):  # every page of the two: code, and mathematics
                found[f"{section} pages"] = {}
                for path in section_paths(site, section):
                    page.goto(base + path, wait_until="load")
                    math = page.eval_on_selector_all(
                        "article .arithmatex", "els => els.map(e => e.querySelector('.katex') !== null)"
                    )
                    found[f"{section} pages"][path] = {
                        "scrolling": _scrolling(page),
                        "math": len(math),
                        "rendered": sum(math),
                    }
            page.close()
            page = browser.new_page()
            page.goto(base, wait_until="networkidle")
            page.locator("label.md-search__icon, .md-search__input").first.click()
            page.keyboard.type("value_and_grad")
            page.wait_for_selector(".md-search-result__item", timeout=15000)
            found["search"] = page.locator(".md-search-result__item").all_inner_texts()
            page.close()
        finally:
            browser.close()
    return found


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("site", help="the built site (mkdocs build)")
    parser.add_argument("--screenshots", default=None, help="write home.png, api.png, tutorial.png here")
    args = parser.parse_args()
    for key, value in check(args.site, args.screenshots).items():
        print(key, value if key != "search" else value[:3])
