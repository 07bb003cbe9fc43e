"""Review comments as Markdown, rendered safely: no raw HTML, only http(s), mailto and relative links.

markdown-it-py with HTML off escapes any tag a comment holds; its link check refuses javascript:,
vbscript:, file: and data: addresses (then the text stays as typed). Links open nothing of ours:
rel="nofollow noopener noreferrer". Images are not loaded (a comment could track its readers): their
text and address show instead.
"""

from __future__ import annotations

import re
from functools import cache

from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt

SAFE_SCHEMES = {"http", "https", "mailto"}
_SCHEME = re.compile(r"^([a-z][a-z0-9+.\-]*):")
_INVISIBLE = re.compile(r"[\x00-\x20\x7f\\]")


def safe_url(url: str) -> bool:
    """http, https, mailto or a relative address; control characters do not hide a scheme."""
    scheme = _SCHEME.match(_INVISIBLE.sub("", url).lower())
    return scheme is None or scheme.group(1) in SAFE_SCHEMES


@cache
def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.disable("image")
    md.validateLink = safe_url

    def link_open(self, tokens, idx, options, env):
        tokens[idx].attrSet("rel", "nofollow noopener noreferrer")
        return self.renderToken(tokens, idx, options, env)

    md.add_render_rule("link_open", link_open)
    return md


def render(text: str) -> SafeString:
    """A comment as HTML that is safe to put in a page."""
    return mark_safe(_parser().render(text or ""))  # noqa: S308 (html off: markdown-it escapes every tag)
