"""A JSON body from outside is refused as `InvalidText` exactly when it holds text that is not valid
Unicode, whichever way the text was written: raw UTF-8, `\\u` escapes, or bytes that are not UTF-8.
The strings are walked only when an escape could have put a surrogate in; this checks the shortcut
against the walk."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from core_ext._asgi import InvalidText, decode_json
from core_ext._limits import invalid_text

# Every code point, lone surrogates (category Cs) included.
ANY_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, blacklist_categories=()), max_size=8)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12)


def _decoded(raw: bytes):
    try:
        return decode_json(raw)
    except InvalidText:
        return InvalidText


@given(VALUES)
def test_escaped_text_is_refused_exactly_when_it_holds_a_surrogate(value):
    raw = json.dumps(value, ensure_ascii=True).encode()  # every non-ASCII character as \u escapes
    assert _decoded(raw) == (InvalidText if invalid_text(value) is not None else value)


@given(VALUES)
def test_raw_text_is_refused_exactly_when_it_holds_a_surrogate(value):
    # A surrogate written as UTF-8 bytes is not UTF-8: refused before any JSON is read.
    raw = json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")
    assert _decoded(raw) == (InvalidText if invalid_text(value) is not None else value)


@pytest.mark.parametrize("raw", [b'{"id": "\\ud800"}', b'{"id": "ok", "\\uDFFF": 1}', b'["a", ["\\udc80x"]]'])
def test_a_lone_surrogate_escape_is_named(raw):
    with pytest.raises(InvalidText, match="surrogate"):
        decode_json(raw)
