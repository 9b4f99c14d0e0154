"""Text from a run (a job's error, a launcher's log line, an unreadable event line) shown as
text in a page's Markdown element (st.error, st.warning): never rendered as Markdown or HTML.

A job's error can carry what the model wrote; rendered as Markdown, `![x](http://...)` loaded an
image from anywhere, `[click](...)` was a link and `**...**` restyled the page. `literal` escapes
every ASCII punctuation character (CommonMark's backslash escapes, which also cover Streamlit's
`$...$` math and `:color[...]` directives) and makes control and bidirectional-override characters
visible as `\\xNN` / `\\uNNNN` (ANSI escapes, NUL, a right-to-left override that would reorder
what follows).
"""

from __future__ import annotations

import string
import unicodedata

_PUNCTUATION = frozenset(string.punctuation)


def _visible(char: str) -> str:
    if char in "\n\t":
        return char
    if unicodedata.category(char) in ("Cc", "Cf"):  # controls, bidi overrides, zero-width marks
        code = ord(char)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return char


def visible(text: object) -> str:
    """`text` with control and format characters (ANSI escapes, NUL, bidirectional overrides that
    reorder how a line reads: "Trojan Source") written out: for a code block (st.code)."""
    return "".join(_visible(c) for c in str(text))


def literal(text: object) -> str:
    """`text` as Markdown that renders exactly as the characters it holds."""
    visible_text = visible(text)
    return "".join(f"&#{ord(c)};" if c in _PUNCTUATION else c for c in visible_text)
