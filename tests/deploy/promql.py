"""Just enough PromQL reading for the tests: which metrics, labels and groupings a query uses.

Syntax is promtool's business (the tests feed every expression to ``promtool check rules``);
this only pulls names out of expressions already known to parse.
"""

from __future__ import annotations

import re

_KEYWORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
    }
)
_SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENT = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def selectors(expr: str) -> list[tuple[str | None, list[tuple[str, str, str]]]]:
    """Each ``metric{label op "value", ...}`` of ``expr``: (metric or None, [(label, op, value)])."""
    return [(m.group(1), _MATCHER.findall(m.group(2))) for m in _SELECTOR.finditer(expr)]


def grouping_labels(expr: str) -> set[str]:
    """Labels named in ``by``/``without``/``on``/``ignoring``/``group_*`` clauses."""
    return {
        label.strip()
        for m in _GROUPING.finditer(expr)
        for label in m.group(1).split(",")
        if label.strip()
    }


_LABEL_REPLACE = re.compile(r',\s*"(\w+)",\s*"[^"]*",\s*"\w+",\s*"[^"]*"\s*\)')


def created_labels(expr: str) -> set[str]:
    """Labels ``expr`` writes with ``label_replace(v, "dst", "replacement", "src", "regex")``."""
    return set(_LABEL_REPLACE.findall(expr))


def metric_names(expr: str) -> set[str]:
    """Names of the series ``expr`` selects (metrics and recorded series)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    names = set()
    for m in _IDENT.finditer(text):
        name = m.group(0)
        following = text[m.end() :].lstrip()[:1]
        preceding = text[: m.start()].rstrip()[-1:]
        if (
            following == "("
            or name.lower() in _KEYWORDS
            or (preceding.isdigit() and len(name) <= 2)
        ):
            continue  # a function, a keyword, or a unit suffix such as the "m" of "5m"
        names.add(name)
    return names


def top_level_grouping(expr: str) -> set[str] | None:
    """The labels an aggregated query's result carries (``by`` labels), None if not aggregated."""
    labels = {
        label.strip()
        for m in re.finditer(r"\bby\s*\(([^)]*)\)", expr)
        for label in m.group(1).split(",")
    }
    labels.discard("le")
    if labels or re.search(r"\b(sum|avg|max|min|count)\s*\(", expr):
        return labels
    return None
