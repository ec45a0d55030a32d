"""RLIKE's patterns (Python's syntax) on PostgreSQL: every pattern below, run by a
real PostgreSQL server after ``regex.for_postgresql``, matches exactly the texts
Python's ``re.search`` matches; what PostgreSQL cannot run is refused by name."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import assay
from assay.store import regex
from tests.conftest import PG_URL

TEXTS = [
    "foo", "foo bar", "foobar", "barfoo", "say foo, bar", "FOO", "Foo Bar", "a_b", "a-b",
    "abc", "abbbc", "ac", "a\nb", "line one\nline two", "x\x08y", "\x08foo", "gpt-4o",
    "gpt-4", "gpt-40", "v1.2.3", "v10.20", "C:\\temp", "a+b", "a++", "[x]", "]", "^a$",
    "ab\n", "", " ", "tab\there", "abc123", "123", "ABC", "über", "日本語",
]
PATTERNS = [
    r"foo", r"^foo$", r"\bfoo\b", r"\bfoo", r"foo\b", r"\Bar", r"o\B", r"[\b]",
    r"^gpt-4\b", r"gpt-4\b(?!o)", r"(?<=gpt-)4", r"(?<!v)1", r"\d+$", r"^\d{3}$",
    r"^v\d+\.\d+$", r"\w+\s\w+", r"\S+", r"^\s*$", r"a.b", r"(?s)a.b", r"^line",
    r"(?m)^line two$", r"(?ms)one.line", r"(?i)foo bar", r"(?i)^abc$", r"ab{,3}c",
    r"ab{2,}c", r"ab{1,2}c", r"ab*?c", r"(?P<x>a)b", r"(?:ab)+c", r"\x62c", r"\x41BC",
    r"\u00fcber", r"[]x]", r"[^]x]", r"[a-c]{3}", r"C:\\temp", r"a\+b", r"\++",
    r"\[x\]", r"\^a\$", r"a|b", r"(foo|bar)$", r"^(?#a comment)foo", r"\Afoo",
    r"bar\Z", r"日本", r"^.$", r"^...$", r"(?x) f o o  # spaced", r"\tthere",
]
REFUSED = [
    (r"(?P<q>a)(?P=q)", "a named back-reference"),
    (r"a(?i:b)", "flags that are not at the start"),
    (r"(a)?(?(1)b|c)", "a conditional group"),
]


@pytest.fixture(scope="module")
def pg() -> Iterator[Any]:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        yield conn


@pytest.mark.parametrize("pattern", PATTERNS)
def test_postgresql_matches_what_python_matches(pg, pattern):
    translated = regex.for_postgresql(pattern)
    rows = pg.execute("SELECT t, t ~ %s FROM unnest(%s::text[]) AS t",
                      [translated, TEXTS]).fetchall()
    found = {text for text, matched in rows if matched}
    expected = {text for text in TEXTS if re.search(pattern, text)}
    assert found == expected, (pattern, translated)


@pytest.mark.parametrize(("pattern", "named"), REFUSED)
def test_what_postgresql_cannot_run_is_refused_by_name(pattern, named):
    with pytest.raises(regex.UnsupportedRegex, match=re.escape(named)):
        regex.for_postgresql(pattern)


@pytest.mark.skipif(not hasattr(re, "NOFLAG"), reason="possessive quantifiers: Python 3.11")
@pytest.mark.parametrize("pattern", [r"a*+b", r"a++", r"a?+b", r"a{1,2}+"])
def test_possessive_quantifiers_are_refused_by_name(pattern):
    with pytest.raises(regex.UnsupportedRegex, match="a possessive quantifier"):
        regex.for_postgresql(pattern)


def test_a_refused_pattern_is_an_invalid_filter_naming_it_on_postgresql(pg_uri, db_uri):
    text = "tags.n RLIKE '(?P<q>a)(?P=q)'"
    assay.configure(store=pg_uri, experiment="rx")
    with pytest.raises(assay.InvalidFilter) as caught:
        assay.search_traces(text)
    assert caught.value.position == 0  # the comparison's
    assert "a named back-reference" in str(caught.value)
    assay.configure(store=db_uri, experiment="rx")
    assert len(assay.search_traces(text, return_type="list")) == 0  # SQLite runs Python's
