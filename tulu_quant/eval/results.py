"""What a benchmark produces (metrics with intervals) and how a candidate's metric compares to the reference's.

Units: accuracies, F1, pass@k, agreement and win rate are points (0-100, as in Tulu's table); perplexity is ppl; KL
divergence is nats. Every metric keeps its per-item scores so that the comparison is paired (same items, same order).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import UserValueError
from .stats import bootstrap_interval, is_binary, macro_mean, mcnemar_exact, paired_bootstrap, wilson_interval


@dataclass
class Metric:
    key: str
    label: str
    unit: str  # "points", "ppl", "nats", "ratio"
    higher_is_better: bool
    value: float | None = None
    n: int = 0
    ci: list[float] | None = None  # 95% interval of the value
    ci_method: str | None = None
    scores: list[float] | None = None  # per item (per window for perplexity), for paired comparison
    groups: list[str] | None = None
    skipped: str | None = None  # the reason, when the metric could not be measured
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class JobResult:
    """One benchmark run on one artifact: its metrics, plus what a candidate's run needs from the reference's."""

    key: str
    metrics: list[Metric]
    outputs: list[Any] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # folders/files this result relies on (must still exist)
    seconds: float = 0.0
    cached: bool = False
    engine: str = "native"  # what computed it: the artifact's own backend, or vllm

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobResult:
        return cls(**{**data, "metrics": [Metric(**m) for m in data["metrics"]]})


# ----------------------------------------------------------------------------------------------------- building metrics


def score_metric(
    key: str,
    label: str,
    scores: list[float],
    groups: list[str] | None = None,
    samples: int = 1000,
    seed: int = 0,
    details: dict[str, Any] | None = None,
) -> Metric:
    """A points metric from per-item scores in [0, 1]: Wilson interval for plain accuracies, bootstrap otherwise."""
    if not scores:
        return Metric(key, label, "points", True, skipped="no items to score", details=details or {})
    value = 100.0 * macro_mean(scores, groups)
    if groups is None and is_binary(scores):
        low, high = wilson_interval(int(sum(scores)), len(scores))
        method = "Wilson score 95%"
    else:
        low, high = bootstrap_interval(scores, groups, samples, seed)
        method = f"bootstrap 95% ({samples} resamples{', stratified by group' if groups else ''})"
    return Metric(
        key,
        label,
        "points",
        True,
        value,
        len(scores),
        [100.0 * low, 100.0 * high],
        method,
        list(scores),
        groups,
        details=details or {},
    )


def perplexity_metric(
    key: str,
    label: str,
    window_nll: list[float],
    tokens_per_window: int,
    samples: int = 1000,
    seed: int = 0,
    details: dict[str, Any] | None = None,
) -> Metric:
    """exp(mean NLL) over equal-length windows; the interval resamples windows."""
    nll = np.asarray(window_nll)
    low, high = bootstrap_interval(nll, None, samples, seed)
    info = {"windows": len(nll), "tokens_scored": int(len(nll) * tokens_per_window), **(details or {})}
    return Metric(
        key,
        label,
        "ppl",
        False,
        float(math.exp(nll.mean())),
        int(len(nll) * tokens_per_window),
        [math.exp(low), math.exp(high)],
        f"bootstrap 95% over windows ({samples} resamples)",
        list(window_nll),
        details=info,
    )


def skipped(key: str, label: str, unit: str, higher_is_better: bool, reason: str) -> Metric:
    return Metric(key, label, unit, higher_is_better, skipped=reason)


# ------------------------------------------------------------------------------------------------------ comparing


@dataclass
class Delta:
    """Candidate minus reference on the same items. For perplexity the delta is also given in percent."""

    metric: str
    reference: float
    candidate: float
    delta: float
    ci: list[float]  # 95% interval of the delta (percent for perplexity, points otherwise)
    ci_unit: str
    within_noise: bool  # the interval contains 0
    test: str
    p_value: float | None = None
    delta_pct: float | None = None


def compare(reference: Metric, candidate: Metric, samples: int = 1000, seed: int = 0) -> Delta | None:
    """The paired comparison of one metric; None when either side has no per-item scores (skipped, or KL-type)."""
    if reference.skipped or candidate.skipped or reference.scores is None or candidate.scores is None:
        return None
    if len(reference.scores) != len(candidate.scores):
        raise UserValueError(
            f"{candidate.key}: reference and candidate were scored on different items "
            f"({len(reference.scores)} vs {len(candidate.scores)}); rerun both with the same suite."
        )
    if reference.unit == "ppl":
        log_delta, low, high = paired_bootstrap(reference.scores, candidate.scores, None, samples, seed)
        pct = [100.0 * math.expm1(low), 100.0 * math.expm1(high)]
        return Delta(
            candidate.key,
            reference.value,
            candidate.value,
            candidate.value - reference.value,
            pct,
            "%",
            low <= 0 <= high,
            "paired bootstrap over windows of the log-perplexity difference",
            None,
            100.0 * math.expm1(log_delta),
        )
    delta, low, high = paired_bootstrap(reference.scores, candidate.scores, reference.groups, samples, seed)
    binary = reference.groups is None and is_binary(reference.scores) and is_binary(candidate.scores)
    test = "paired bootstrap over items" + (" + exact McNemar" if binary else "")
    p_value = mcnemar_exact(reference.scores, candidate.scores) if binary else None
    return Delta(
        candidate.key,
        reference.value,
        candidate.value,
        100.0 * delta,
        [100.0 * low, 100.0 * high],
        "points",
        low <= 0 <= high,
        test,
        p_value,
    )
