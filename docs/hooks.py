"""MkDocs hooks of the docs site (named in mkdocs.yml; not a page).

The API pages show each function's source in a folded block; the search leaves those blocks out
(Material skips elements marked `data-search-exclude`), so a search finds a name's documentation,
not the lines of its body.
"""

SOURCE_BLOCK = '<details class="mkdocstrings-source">'


def on_page_content(html, **kwargs):
    return html.replace(SOURCE_BLOCK, '<details class="mkdocstrings-source" data-search-exclude>')
