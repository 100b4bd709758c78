"""Experiments: runs described once, trained or reused, and chosen on validation.

Choosing on validation has one rule in this bundle, `rank_on_validation`: the
highest score first; equal scores keep the order in which the candidates were
listed (so list the default or simplest candidate first); a candidate without a
score (NaN or None: it stopped before finishing) is never chosen.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

__all__ = ["rank_on_validation", "select_best"]


def _usable(score: Optional[float]) -> bool:
    return score is not None and not (isinstance(score, float) and math.isnan(score))


def rank_on_validation(val_scores: Sequence[Optional[float]]) -> list[int]:
    """Indices of the candidates with a score, best first (see the module's rule)."""
    scores = list(val_scores)
    if not scores:
        raise ValueError("rank_on_validation needs at least one candidate's validation score")
    usable = [i for i, s in enumerate(scores) if _usable(s)]
    return sorted(usable, key=lambda i: -float(scores[i]))  # sorted() is stable: ties keep order


def select_best(val_scores: Sequence[Optional[float]]) -> int:
    """Index of the best validation score, by `rank_on_validation`'s rule. Takes
    validation scores only, so nothing else can influence the choice."""
    ranked = rank_on_validation(val_scores)
    if not ranked:
        raise ValueError("select_best: every candidate lacks a validation score (all stopped early)")
    return ranked[0]
