import math
from itertools import combinations

import numpy as np
import pytest

from tulu_quant.eval import stats


def test_wilson_interval_of_known_proportions():
    # 8 of 10: the textbook Wilson interval (z = 1.96) is [0.4902, 0.9433].
    low, high = stats.wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4) and high == pytest.approx(0.9433, abs=1e-4)
    # 0 of 20 still has a positive upper bound, 20 of 20 a lower bound below 1 (the normal interval would collapse).
    assert stats.wilson_interval(0, 20)[0] == 0.0 and stats.wilson_interval(0, 20)[1] == pytest.approx(0.1611, abs=1e-4)
    assert stats.wilson_interval(20, 20)[0] == pytest.approx(1 - 0.1611, abs=1e-4)


def test_pass_at_k_matches_the_combinatorial_definition():
    n = 10
    for correct in range(n + 1):
        for k in (1, 3, 10):
            # probability that at least one of k distinct samples is correct, by enumeration
            samples = [1] * correct + [0] * (n - correct)
            subsets = list(combinations(samples, k))
            expected = sum(any(s) for s in subsets) / len(subsets)
            assert stats.pass_at_k(n, correct, k) == pytest.approx(expected)
    with pytest.raises(ValueError):
        stats.pass_at_k(5, 1, 10)


def test_mcnemar_exact():
    # 5 discordant pairs, all against the candidate: p = 2 * (1/2)^5.
    ref = [1, 1, 1, 1, 1, 1, 0]
    cand = [0, 0, 0, 0, 0, 1, 0]
    assert stats.mcnemar_exact(ref, cand) == pytest.approx(2 / 32)
    assert stats.mcnemar_exact([1, 0], [1, 0]) == 1.0


def test_paired_bootstrap_identical_and_shifted():
    rng = np.random.default_rng(0)
    ref = list(rng.integers(0, 2, 200).astype(float))
    delta, low, high = stats.paired_bootstrap(ref, ref, samples=300)
    assert (delta, low, high) == (0.0, 0.0, 0.0)
    worse = [0.0] * 200
    delta, low, high = stats.paired_bootstrap(ref, worse, samples=300)
    assert delta == pytest.approx(-np.mean(ref)) and high < 0


def test_macro_mean_and_stratified_bootstrap():
    scores = [1, 1, 1, 1, 0, 0]
    groups = ["a", "a", "a", "a", "b", "b"]
    assert stats.macro_mean(scores, groups) == pytest.approx(0.5)  # (1 + 0) / 2, not 4/6
    # every group is resampled within itself: group a is always 1 and b always 0, so every resample gives 0.5
    assert stats.bootstrap_interval(scores, groups, samples=200) == pytest.approx((0.5, 0.5))
    low, high = stats.bootstrap_interval([0, 1] * 50, samples=500)
    assert low < 0.5 < high and math.isclose(low + high, 1.0, abs_tol=0.06)
