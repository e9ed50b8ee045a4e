"""Confidence intervals and paired comparisons, on plain Python/numpy data.

- One model's accuracy: the 95% Wilson score interval (good at small n and near 0 or 1, unlike the normal interval).
- Macro averages (over BBH tasks, TydiQA languages) and non-binary scores (F1, pass@k estimates, ROUGE-L): a
  percentile bootstrap over items, stratified by group so every resample keeps each group's size.
- A candidate against the reference on the same items: the paired bootstrap of the difference (items resampled
  together, so per-item agreement between the two models is kept). The delta is *within noise* when its 95% interval
  contains 0. For 0/1 scores the exact McNemar test (two-sided binomial test on the discordant pairs) is reported too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

Z95 = 1.959963984540054  # the 97.5th percentile of the standard normal


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of a proportion (as fractions)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def macro_mean(scores: Sequence[float], groups: Sequence[str] | None = None) -> float:
    """Mean of per-group means (plain mean without groups)."""
    values = np.asarray(scores, dtype=np.float64)
    if groups is None:
        return float(values.mean()) if len(values) else float("nan")
    keys = np.asarray(groups)
    return float(np.mean([values[keys == g].mean() for g in dict.fromkeys(groups)]))


def _resample_indices(groups: Sequence[str] | None, n: int, rng: np.random.Generator) -> np.ndarray:
    if groups is None:
        return rng.integers(0, n, size=n)
    keys = np.asarray(groups)
    parts = []
    for g in dict.fromkeys(groups):
        members = np.flatnonzero(keys == g)
        parts.append(members[rng.integers(0, len(members), size=len(members))])
    return np.concatenate(parts)


def bootstrap_interval(
    scores: Sequence[float], groups: Sequence[str] | None = None, samples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile bootstrap interval of macro_mean(scores, groups)."""
    values = np.asarray(scores, dtype=np.float64)
    if len(values) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    keys = None if groups is None else np.asarray(groups)
    stats = []
    for _ in range(samples):
        idx = _resample_indices(groups, len(values), rng)
        stats.append(macro_mean(values[idx], None if keys is None else list(keys[idx])))
    low, high = np.percentile(stats, [2.5, 97.5])
    return (float(low), float(high))


def paired_bootstrap(
    reference: Sequence[float],
    candidate: Sequence[float],
    groups: Sequence[str] | None = None,
    samples: int = 1000,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(delta, low, high): candidate minus reference of macro_mean, with the 95% paired bootstrap interval."""
    ref = np.asarray(reference, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if ref.shape != cand.shape:
        raise ValueError(f"paired comparison needs the same items: {ref.shape} vs {cand.shape}")
    delta = macro_mean(cand, groups) - macro_mean(ref, groups)
    if len(ref) == 0:
        return (float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    keys = None if groups is None else np.asarray(groups)
    diffs = cand - ref
    stats = []
    for _ in range(samples):
        idx = _resample_indices(groups, len(diffs), rng)
        stats.append(macro_mean(diffs[idx], None if keys is None else list(keys[idx])))
    low, high = np.percentile(stats, [2.5, 97.5])
    return (float(delta), float(low), float(high))


def mcnemar_exact(reference: Sequence[float], candidate: Sequence[float]) -> float:
    """Two-sided exact McNemar p-value for paired 0/1 outcomes (binomial test on the discordant pairs)."""
    b = sum(1 for r, c in zip(reference, candidate) if r >= 0.5 > c)  # reference right, candidate wrong
    c_ = sum(1 for r, c in zip(reference, candidate) if c >= 0.5 > r)
    n = b + c_
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(0, min(b, c_) + 1)) / 2**n
    return min(1.0, 2 * tail)


def pass_at_k(n: int, correct: int, k: int) -> float:
    """Unbiased pass@k estimator (Chen et al. 2021): 1 - C(n - c, k) / C(n, k), computed as a stable product."""
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got {n}")
    if n - correct < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - correct + 1, n + 1)))


def is_binary(scores: Sequence[float]) -> bool:
    return all(s in (0, 1, 0.0, 1.0) for s in scores)
