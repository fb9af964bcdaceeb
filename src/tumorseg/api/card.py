"""The shipped model's card (weights/MODEL_CARD.md) as a web page, so that a web user can read
its license, results and failure modes."""

from __future__ import annotations

import html
import re

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="stylesheet" href="/static/style.css">
<link rel="icon" href="data:,">
</head>
<body class="card">
<p><a href="/">Back to the segmentation page</a></p>
{body}
</body>
</html>
"""


def slug(text: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def card_html(markdown: str) -> str:
    """The card rendered to a page (raw HTML in it is shown as text), headings with GitHub's anchors."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    tokens = md.parse(markdown)
    title = "Model card"
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open":
            text = tokens[i + 1].content
            tok.attrSet("id", slug(text))
            if tok.tag == "h1":
                title = text
    return PAGE.format(title=html.escape(title), body=md.renderer.render(tokens, md.options, {}))


def no_card_html(message: str) -> str:
    """The page a browser gets where there is no card to show, in words, not JSON."""
    return PAGE.format(title="No model card", body=f"<h1>No model card</h1>\n<p>{html.escape(message)}</p>")
