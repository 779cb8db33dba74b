"""MkDocs hooks of the docs site (named in mkdocs.yml; not a page).

The header shows the version the site documents. The API pages show each function's source in a
folded block; the search leaves those blocks out (Material skips elements marked
`data-search-exclude`), so a search finds a name's documentation, not the lines of its body.
"""

SOURCE_BLOCK = '<details class="mkdocstrings-source">'


def on_page_content(html, **kwargs):
    return html.replace(SOURCE_BLOCK, '<details class="mkdocstrings-source" data-search-exclude>')


def on_config(config, **kwargs):
    """The version in the site's header: jaxnn.__version__, read from the one place it is defined."""
    import os  # noqa: PLC0415
    import re  # noqa: PLC0415

    init = os.path.join(os.path.dirname(config["docs_dir"]), "jaxnn", "__init__.py")
    with open(init, encoding="utf-8") as f:
        version = re.search(r'^__version__ = "([^"]+)"', f.read(), re.M)
    if version:
        config["site_name"] = f"jaxnn {version.group(1)}"
    return config
