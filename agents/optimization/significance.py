"""Whether a candidate's win over the champion is real: paired tests on the same held-out cases.

Both versions answer the same cases, so each case gives one difference (candidate minus champion) and the tests are
paired. The sign test counts wins against losses, ignoring ties, and asks how likely that many wins would be if
either version were as likely to win a case (an exact binomial tail). The paired bootstrap resamples the cases and
asks how often the mean difference is not above zero. Both are one-sided and need no distributional assumption;
the bootstrap also weighs how much better, the sign test only how often. Both p-values are computed and logged; the
request chooses which one decides.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from insight_mcp.agents.optimization.model import Significance, SignificanceResult

BOOTSTRAP_RESAMPLES = 2000
TIE = 1e-9


def sign_test(differences: Sequence[float]) -> float:
    """One-sided exact sign test: P(this many wins or more | a win as likely as a loss); 1 with no decisive pair."""
    wins = sum(1 for d in differences if d > TIE)
    losses = sum(1 for d in differences if d < -TIE)
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(wins, n + 1))
    return min(1.0, tail / 2**n)


def paired_bootstrap(differences: Sequence[float], *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> float:
    """One-sided paired bootstrap: the share of resampled mean differences at or below zero (add-one smoothed)."""
    values = list(differences)
    if not values:
        return 1.0
    rng = random.Random(seed)
    n = len(values)
    not_better = sum(1 for _ in range(resamples) if sum(rng.choice(values) for _ in range(n)) / n <= TIE)
    return (not_better + 1) / (resamples + 1)


def compare(champion: Sequence[float], candidate: Sequence[float], *, test: Significance, alpha: float,
            seed: int = 0) -> SignificanceResult:
    """Both tests on paired scores (same cases, same order); `significant` follows the chosen test."""
    if len(champion) != len(candidate):
        raise ValueError("paired scores must have the same length")
    differences = [b - a for a, b in zip(champion, candidate, strict=True)]
    p_sign = sign_test(differences)
    p_boot = paired_bootstrap(differences, seed=seed)
    chosen = p_sign if test == "sign" else p_boot
    return SignificanceResult(
        test=test, p_value=round(chosen, 6), p_value_sign=round(p_sign, 6), p_value_bootstrap=round(p_boot, 6),
        alpha=alpha, significant=chosen < alpha, pairs=len(differences),
        wins=sum(1 for d in differences if d > TIE), losses=sum(1 for d in differences if d < -TIE),
        ties=sum(1 for d in differences if abs(d) <= TIE),
        mean_difference=round(sum(differences) / len(differences), 6) if differences else 0.0,
    )
