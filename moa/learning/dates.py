"""A deterministic recogniser of dates and date-like durations in English text (the ``date`` type).

Entity data such as WNUT-17 has no ``date`` type, so a tagger trained on it cannot find dates;
this recogniser does, from general rules of English date expressions (nothing is learned):

* calendar dates: ``2024-03-05``, ``05/03/2024``, ``3/5/24``, ``5.3.2024``;
* month names (capitalised, full or abbreviated) with a day and/or a year: ``March 2024``,
  ``March 3``, ``3rd of March``, ``Dec. 5, 2023``; a month name alone when it cannot be a common
  word (``January``, ``Sept``; not ``May``, ``March`` or the abbreviations);
* weekdays (``Monday``, ``on tuesday``) and relative days: ``today``, ``tomorrow``, ``yesterday``,
  ``tonight``, ``last week``, ``next month``, ``this weekend``;
* a year after a preposition: ``in 2019``, ``since 1998`` (the year alone is the date);
* durations of days and longer: ``two days``, ``3 weeks``, ``a few months``, ``ten years``.

Matches never overlap: the longest match wins, then the leftmost.
"""

from __future__ import annotations

import bisect
import re

DATE = "date"

_MONTHS_FULL = "January|February|March|April|May|June|July|August|September|October|November|December"
_MONTHS_ABBR = r"Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sept?|Oct|Nov|Dec"
_MONTH = rf"(?:{_MONTHS_FULL}|(?:{_MONTHS_ABBR})\.?)"
_ALONE_MONTH = r"(?:January|February|April|June|July|August|September|October|November|December|Sept)"
_DAY = r"(?:[12]\d|3[01]|0?[1-9])(?:st|nd|rd|th)?"
_YEAR = r"(?:1[89]\d\d|2\d\d\d)"
_WEEKDAY = r"(?i:monday|tuesday|wednesday|thursday|friday|saturday|sunday)s?"
_COUNT = (
    r"(?i:\d+|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|"
    r"a\s+few|a\s+couple\s+of|few|several|many|couple\s+of)"
)
_UNIT = r"(?i:days?|weeks?|fortnights?|months?|years?|decades?)"
_RELATIVE = r"(?i:today|tomorrow|yesterday|tonight)"
_PERIOD = r"(?i:(?:last|next|this|past|coming)\s+(?:week|weekend|month|year|night|morning|evening|afternoon|summer|winter|spring|autumn|fall))"

_PATTERNS = [
    r"\b\d{4}-\d{1,2}-\d{1,2}\b",
    r"\b\d{1,2}[/.]\d{1,2}[/.](?:\d{4}|\d{2})\b",
    rf"\b{_MONTH}\s+{_DAY}\b(?:,?\s+{_YEAR}\b)?",
    rf"\b{_MONTH}\s+{_YEAR}\b",
    rf"\b{_DAY}\s+(?:of\s+)?{_MONTH}(?:,?\s+{_YEAR}\b)?",
    rf"\b{_ALONE_MONTH}\b",
    rf"\b{_WEEKDAY}\b",
    rf"\b{_RELATIVE}\b",
    rf"\b{_PERIOD}\b",
    rf"(?i:(?<=\bin\s)|(?<=\bof\s)|(?<=\bby\s)|(?<=\bsince\s)|(?<=\buntil\s)|(?<=\bfrom\s)|(?<=\bbefore\s)|(?<=\bafter\s)|(?<=\bduring\s)){_YEAR}\b",
    rf"\b{_COUNT}\s+{_UNIT}\b",
]
_COMPILED = [re.compile(p) for p in _PATTERNS]


def find_dates(text: str) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the dates in ``text`` (see the module docstring), in order."""
    candidates: list[tuple[int, int]] = []
    for pattern in _COMPILED:
        candidates += [(m.start(), m.end()) for m in pattern.finditer(text) if m.end() > m.start()]
    chosen: list[tuple[int, int]] = []  # sorted, non-overlapping: a candidate can only overlap its neighbours
    for start, end in sorted(candidates, key=lambda s: (s[0] - s[1], s[0])):  # longest first, then leftmost
        at = bisect.bisect_left(chosen, (start, end))
        if (at == 0 or chosen[at - 1][1] <= start) and (at == len(chosen) or chosen[at][0] >= end):
            chosen.insert(at, (start, end))
    return chosen
