"""The text query language of the student network: ``"I | G=C, S=1"`` -> exact probabilities.

A query is ``targets | evidence``, optionally wrapped in ``P( ... )``. Targets are all variable
names (their joint posterior) or all ``name=value`` (the probability of that event); evidence is
``name=value``, comma-separated. Names are D, I, G, S, L or difficulty, intelligence, grade,
sat, letter; G takes A, B, C (or 0, 1, 2), the others 0 or 1. :func:`parse_query` turns the text
into the target and evidence of :func:`pyro_zoo.models.student.model.query`, which answers by enumeration;
:func:`answer` labels the result. ``zoo query student TEXT`` calls :func:`answer_network`.
"""

from __future__ import annotations

import re

import torch

from pyro_zoo.models.student.model import (
    QueryError,
    StudentNetwork,
    code,
    configurations,
    label,
    query,
    quoted,
    variable,
)


def parse_query(text: str) -> tuple[list[str] | dict[str, int], dict[str, int]]:
    """``"I | G=C, S=1"`` -> ``(["I"], {"G": 2, "S": 1})``; ``"G=A, S=1, L=1"`` -> ``({...}, {})``.

    Targets left of ``|`` are all names (their posterior) or all ``name=value`` (the event's
    probability); evidence right of ``|`` is ``name=value``, comma-separated. ``P( ... )`` around
    the query is allowed; names are D, I, G, S, L or difficulty, intelligence, grade, sat, letter.
    """
    if not isinstance(text, str) or not text.strip():
        raise QueryError("empty query; write e.g. 'I | G=C, S=1' or 'L=1'")
    body = text.strip()
    wrapped = re.fullmatch(r"[Pp]\s*\((.*)\)", body)
    body = wrapped.group(1) if wrapped else body
    if body.count("|") > 1:
        raise QueryError(f"query {quoted(text)} has more than one '|'; write 'targets | evidence'")
    left, _, right = body.partition("|")
    target_items = [t.strip() for t in left.split(",")]
    if any(not t for t in target_items):
        raise QueryError(f"query {quoted(text)} has an empty target; write e.g. 'I | G=C'")
    assigned = ["=" in t for t in target_items]
    if any(assigned) and not all(assigned):
        raise QueryError(
            f"query {quoted(text)} mixes names and name=value targets; write e.g. 'I, L | S=1' or 'L=1, S=1'"
        )
    target = _pairs(target_items, text) if all(assigned) else [variable(t) for t in target_items]
    evidence = {}
    if right.strip():
        evidence = _pairs([t.strip() for t in right.split(",")], text)
    elif "|" in body:
        raise QueryError(f"query {quoted(text)} has nothing after '|'; give evidence like 'G=C' or drop '|'")
    return target, evidence


def _pairs(items: list[str], text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise QueryError(f"{quoted(item)} in query {quoted(text)} is not name=value; write e.g. 'G=C'")
        name = variable(key)
        if name in out:
            raise QueryError(f"{name} appears twice in query {quoted(text)}; give each variable once")
        out[name] = code(name, value)
    return out


def answer(text: str, cpds: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Answer a query string exactly: ``answer("I | G=C, S=1")`` -> {"I=0": .4217, "I=1": .5783}.

    Keys are ``name=value`` (joint targets joined by ","; grades as A/B/C); values are
    probabilities. ``cpds`` defaults to the true network. Bad queries raise :class:`QueryError`
    (a ``ValueError``) naming the fix.
    """
    target, evidence = parse_query(text)
    result = query(target, evidence, cpds)
    if isinstance(target, dict):
        return {",".join(label(n, v) for n, v in target.items()): result.item()}
    out = {}
    for index in configurations(target):
        key = ",".join(label(n, v) for n, v in zip(target, index, strict=True))
        out[key] = result[index].item()
    return out


def answer_network(model: StudentNetwork, text: str) -> dict[str, float]:
    """:func:`answer` under ``model``'s posterior-mean network (``zoo query student TEXT``)."""
    return answer(text, model.learned_cpds(torch.float64))


__all__ = ["QueryError", "answer", "answer_network", "parse_query"]
