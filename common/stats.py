"""The noise rule every comparison in the bundle uses, in one place: the text that
states a difference (common.observations) and the choice that acts on one
(common.experiments.choose_methods) judge it alike.

A difference counts only beyond two standard errors, SE^2 being the sum of the
variances of the independent estimates it is made of. An accuracy p measured on
n images has the binomial variance p(1 - p)/n. Two runs scored on the same images
are positively correlated, so treating them as independent overstates the noise:
the rule errs towards "within noise".
"""
from __future__ import annotations

import math

__all__ = ["binomial", "noise"]


def binomial(p: float, n: int) -> float:
    """The variance of an accuracy p measured on n images: p(1 - p)/n."""
    return p * (1 - p) / n


def noise(difference: float, *variances: float) -> tuple[bool, float]:
    """The noise rule: (is |difference| beyond two standard errors, 2 SE), with SE^2 the
    sum of the variances of the independent estimates the difference is made of."""
    two_se = 2 * math.sqrt(sum(variances))
    return abs(difference) > two_se, two_se
