"""``RLIKE`` patterns, written in Python's regular-expression syntax, as
PostgreSQL's regular expressions (its "advanced" ones, AREs).

SQLite runs ``RLIKE`` through Python's :func:`re.search`, so Python's syntax is
the language's. PostgreSQL reads most of it the same way; where it does not,
the pattern is rewritten, so that a filter finds the same traces on either
database:

- ``\\b`` and ``\\B`` (a word boundary, and not one) are ``\\y`` and ``\\Y``
  there, where ``\\b`` is a backspace (inside brackets, it is one in both);
- ``\\xhh`` takes exactly two hex digits (PostgreSQL takes as many as follow);
- ``{,n}`` repeats zero to n times (PostgreSQL reads it as text);
- a named group ``(?P<name>...)`` is a plain group;
- ``.`` matches no newline, and ``^`` and ``$`` hold at the ends of the text
  only, unless the flags ``(?s)`` and ``(?m)`` at the start say otherwise;
  these, ``(?i)`` and ``(?x)`` become PostgreSQL's embedded options (p, n, s,
  w, i and x).

What PostgreSQL has no equivalent for (a named back-reference, flags in the
middle of a pattern or for one group, a conditional or atomic group, a
possessive quantifier) raises :class:`UnsupportedRegex`, naming it.

Differences that remain, at the edges: Python's ``\\w``, ``\\d`` and ``\\s``
follow Unicode, PostgreSQL's its locale (the same for ASCII text); without
``(?s)``, a negated bracket expression such as ``[^a]`` matches a newline in
Python but not in PostgreSQL; Python's ``$`` also holds before a newline that
ends the text.
"""

from __future__ import annotations

import re

__all__ = ["UnsupportedRegex", "for_postgresql"]

_LEADING_FLAGS = re.compile(r"\(\?([aiLmsux]+)\)")
_HEX2 = re.compile(r"[0-9a-fA-F]{2}")
_UP_TO = re.compile(r"\{,(\d+)\}")
_REPEAT = re.compile(r"\{\d+(,\d*)?\}")
_GROUP_NAME = re.compile(r"\(\?P<[^>]*>")


class UnsupportedRegex(ValueError):
    """A construct of Python's regular expressions that PostgreSQL cannot run."""


def for_postgresql(pattern: str) -> str:
    """``pattern`` (Python's syntax, already known to compile) in PostgreSQL's.

    Raises:
        UnsupportedRegex: the pattern uses what PostgreSQL has no equivalent for.
    """
    flags = ""
    lead = _LEADING_FLAGS.match(pattern)
    while lead is not None:
        flags += lead.group(1)
        pattern = pattern[lead.end():]
        lead = _LEADING_FLAGS.match(pattern)
    out: list[str] = []
    i, n = 0, len(pattern)
    class_from = -1  # where the bracket expression being read began, or -1
    quantified = False  # the last thing read was a quantifier
    while i < n:
        ch = pattern[i]
        if ch == "\\" and i + 1 < n:
            quantified = False
            esc = pattern[i + 1]
            if esc in "bB" and class_from < 0:
                out.append("\\y" if esc == "b" else "\\Y")
            elif esc == "x" and _HEX2.match(pattern, i + 2):
                out.append(f"\\u00{pattern[i + 2:i + 4]}")
                i += 2
            else:
                out.append(pattern[i:i + 2])
            i += 2
            continue
        if class_from >= 0:
            # A ']' first in the brackets (after any '^') is a character.
            first = class_from + 1 + (pattern[class_from + 1:class_from + 2] == "^")
            if ch == "]" and i > first:
                class_from = -1
                quantified = False
            out.append(ch)
            i += 1
            continue
        if ch == "+" and quantified:
            raise UnsupportedRegex(f"a possessive quantifier ({pattern[max(i - 4, 0):i + 1]!r}) "
                                   "has no equivalent on PostgreSQL")
        quantified = ch in "*+?"
        if ch == "[":
            class_from = i
        elif ch == "{" and (up_to := _UP_TO.match(pattern, i)) is not None:
            out.append(f"{{0,{up_to.group(1)}}}")
            i = up_to.end()
            quantified = True
            continue
        elif ch == "{" and (repeat := _REPEAT.match(pattern, i)) is not None:
            out.append(repeat.group())
            i = repeat.end()
            quantified = True
            continue
        elif pattern.startswith("(?", i):
            named = _GROUP_NAME.match(pattern, i)
            if named is not None:
                out.append("(")
                i = named.end()
                continue
            quantified = False
            rest = pattern[i + 2:i + 4]
            if not (rest.startswith((":", "=", "!", "#")) or rest in ("<=", "<!")):
                raise UnsupportedRegex(_unsupported(pattern, i))
        out.append(ch)
        i += 1
    return _options(flags) + "".join(out)


def _unsupported(pattern: str, at: int) -> str:
    what = pattern[at:at + 4]
    if what.startswith("(?P="):
        kind = "a named back-reference"
    elif what.startswith("(?("):
        kind = "a conditional group"
    elif what.startswith("(?>"):
        kind = "an atomic group"
    else:
        kind = "flags that are not at the start of the pattern"
    return f"{kind} ({pattern[at:at + 12]!r}...) has no equivalent on PostgreSQL"


def _options(flags: str) -> str:
    """PostgreSQL's embedded options for Python's flags ``(?aiLmsux)``."""
    dotall, multiline = "s" in flags, "m" in flags
    letters = {(False, False): "p", (False, True): "n", (True, False): "s",
               (True, True): "w"}[(dotall, multiline)]
    letters += "i" * ("i" in flags) + "x" * ("x" in flags)
    return f"(?{letters})"
