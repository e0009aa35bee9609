"""Words in a task that the router planner reads besides embedding similarity.

Embeddings match a clause to the agent whose description it resembles, which fails on the
clauses that name what to process rather than what to do ("Keep only the reviews about delivery"
resembles the sentiment agent's examples), on two requests in one clause ("the sentiment of the
reviews that are not spam, and the entities"), and on negations ("no entity extraction needed").
These cues, for the built-in agents, decide those cases:

* :func:`clause_cues`: the built-in agents a clause asks for by its words;
* :func:`filter_lead`: a clause that starts by removing or keeping items is a filtering clause,
  whatever it resembles;
* :func:`negated`: a clause that says an agent is *not* wanted ("Don't filter anything");
* :func:`filter_options`: the filter's mode (keep / drop) and criterion from its clause;
* :func:`flags_only`: a filtering clause that asks which items match ("whether it is spam")
  without removing any, so later steps still see every item.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_I = re.IGNORECASE
_KEEP = r"keep(?:\s+only)?|only\s+keep|(?:i\s+)?only\s+want|(?:i\s+)?just\s+want|only\s+look\s+at|look\s+only\s+at|show\s+me\s+only|pick\s+out|select\s+only|only\s+the"
_DROP = (
    r"filter(?:\s+out)?|remove|drop|discard|exclude|excluding|except(?:\s+for)?|ignore|skip|get\s+rid\s+of|throw\s+(?:away|out)|"
    r"weed\s+out|strip\s+out|leave\s+out|leaving\s+aside|without"
)
_LEAD = re.compile(rf"^(?:please\s+|first\s+|then\s+|but\s+)*(?P<verb>{_KEEP}|{_DROP})\b\s*(?:the\s+|any\s+|all\s+|those\s+)?", _I)
_KEEP_ANYWHERE = re.compile(r"\b(keep only|only keep|only want|just want|only look at|look only at|show me only|down to)\b", _I)
_CUES: dict[str, re.Pattern[str]] = {
    "retrieval": re.compile(r"\b(knowledge base|documentation|our docs|in memory|from memory|our notes|(we|i) (stored|saved)|on file|look up|search|retrieve)\b", _I),
    "extraction": re.compile(r"\b(entit(y|ies)|extract\w*|pull out|who is mentioned|mentioned|mentions|named in|list (the|every|all) \w+)\b", _I),
    "sentiment": re.compile(r"\b(sentiment|tone|mood|how \w+ feels?|positive|negative|happy|unhappy|upset|angry)\b", _I),
    "filtering": re.compile(r"\b(spam|except|excluding)\b", _I),
}
_NEGATED = re.compile(r"\b(no|not|don't|do not|without)\b[^.;]*\b(need|needed|necessary|required|anything|wanted)\b|\bdon't (filter|extract|classify)\b", _I)
_FLAG = re.compile(r"^(whether|if|mark|flag|which|is it|is each|tell me (whether|if|which))\b", _I)


def clause_cues(clause: str, agents: Sequence[str]) -> list[str]:
    """The built-in agents among ``agents`` that ``clause`` asks for by its words."""
    found = [name for name, cue in _CUES.items() if name in agents and cue.search(clause)]
    if "filtering" in agents and filter_lead(clause) and "filtering" not in found:
        found.append("filtering")
    return found


def filter_lead(clause: str) -> bool:
    """``clause`` starts by removing or keeping items ("Skip the spam", "I only want ...")."""
    return _LEAD.match(clause.strip()) is not None


def negated(clause: str) -> bool:
    """``clause`` says something is not wanted ("no entity extraction needed")."""
    return _NEGATED.search(clause) is not None


def flags_only(clause: str) -> bool:
    """A filtering clause that asks which items match without removing any ("whether it is spam")."""
    return not filter_lead(clause) and _FLAG.match(clause.strip()) is not None


def filter_options(clause: str) -> dict[str, str]:
    """The filter's ``mode`` and ``criterion`` from its clause: "Keep only the reviews about
    delivery" → keep, "reviews about delivery"; "Filter out spam" → drop, "spam"."""
    text = clause.strip()
    lead = _LEAD.match(text)
    keep = _KEEP_ANYWHERE.search(text) is not None or (lead is not None and re.fullmatch(_KEEP, lead["verb"], _I) is not None)
    criterion = text[lead.end() :] if lead else text
    criterion = re.sub(r"^(the\s+)?(messages|items|texts)\s+down\s+to\s+(those\s+)?", "", criterion.strip(), flags=_I).strip(" .?!") or "spam"
    return {"criterion": criterion, "mode": "keep" if keep else "drop"}


__all__: Sequence[str] = ["clause_cues", "filter_lead", "filter_options", "flags_only", "negated"]
