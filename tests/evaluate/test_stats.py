"""assay.evaluate.stats against scipy (and, for Tango's interval, an independent
numerical computation), edge cases and bad input."""

from __future__ import annotations

import math
import warnings
from dataclasses import FrozenInstanceError

import numpy as np
import pytest

scipy_stats = pytest.importorskip("scipy.stats")
scipy_optimize = pytest.importorskip("scipy.optimize")

from assay.evaluate import stats  # noqa: E402

LEVELS = (0.8, 0.9, 0.95, 0.99)


def sample(seed: int, n: int, kind: str = "normal") -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "lognormal":
        return rng.lognormal(0.0, 1.0, n)
    if kind == "likert":
        return rng.integers(1, 6, n).astype(float)
    return rng.normal(0.5, 0.2, n)


# -- Wilson ----------------------------------------------------------------------------------


@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (0, 10), (3, 10), (10, 10), (45, 50),
                                 (160, 200), (1, 1000), (999, 1000), (5000, 12345)])
@pytest.mark.parametrize("level", LEVELS)
def test_wilson_matches_scipy(k, n, level):
    ref = scipy_stats.binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    low, high = stats.wilson_interval(k, n, level)
    assert low == pytest.approx(ref.low, rel=1e-12, abs=1e-15)
    assert high == pytest.approx(ref.high, rel=1e-12, abs=1e-15)
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_wilson_edges():
    assert stats.wilson_interval(0, 0) == (0.0, 1.0)
    assert stats.wilson_interval(0, 5)[0] == 0.0
    assert stats.wilson_interval(5, 5)[1] == 1.0
    assert stats.wilson_interval(np.int64(3), np.int64(10)) == stats.wilson_interval(3, 10)


@pytest.mark.parametrize("args,match", [
    ((11, 10), "larger than n"), ((-1, 10), "successes"), ((1, -1), "n="),
    ((1.5, 10), "successes"), ((True, 10), "successes"), ((1, 10, 1.0), "level"),
    ((1, 10, 0.0), "level"), ((1, 10, 95), "level"), ((1, 10, "0.95"), "level"),
])
def test_wilson_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        stats.wilson_interval(*args)


# -- Student t -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 5, 30, 200, 5000])
@pytest.mark.parametrize("level", LEVELS)
def test_t_interval_matches_scipy(n, level):
    x = sample(n, n, "lognormal")
    ref = scipy_stats.t.interval(level, n - 1, loc=np.mean(x), scale=scipy_stats.sem(x))
    low, high = stats.t_interval(x, level)
    assert low == pytest.approx(ref[0], rel=1e-10, abs=1e-12)
    assert high == pytest.approx(ref[1], rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 29, 99, 1999, 2000, 10**5, 10**7])
@pytest.mark.parametrize("p", [0.4, 0.1, 0.025, 0.005, 1e-5])
def test_t_quantile_matches_scipy(df, p):
    assert stats._t_isf(p, float(df)) == pytest.approx(scipy_stats.t.isf(p, df), rel=1e-10)


def test_t_interval_edges():
    assert stats.t_interval([0.7]) == (0.7, 0.7)
    assert stats.t_interval([2.0] * 10) == (2.0, 2.0)
    assert stats.t_interval([1, 2, 3, 4]) == pytest.approx((0.44573, 4.55427), abs=1e-5)
    for bad, match in [([], "empty"), ([1.0, math.nan], r"values\[1\]"),
                       ([1.0, math.inf], "finite"), ([[1.0, 2.0]], "one-dimensional"),
                       (["a", "b"], "numbers"), ("12", "string")]:
        with pytest.raises(ValueError, match=match):
            stats.t_interval(bad)
    with pytest.raises(ValueError, match="level"):
        stats.t_interval([1.0, 2.0], level=1.5)


# -- bootstrap -------------------------------------------------------------------------------


def _scipy_percentile(a, q):
    return lambda x, axis=-1: np.percentile(x, q, axis=axis)


SCIPY_STATISTIC = {"mean": np.mean, "median": np.median, "p90": _scipy_percentile(None, 90),
                   "p5": _scipy_percentile(None, 5)}


def scipy_bootstrap(x, statistic, level, resamples, seed, method):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = scipy_stats.bootstrap((x,), statistic, confidence_level=level,
                                    n_resamples=resamples, method=method,
                                    rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


@pytest.mark.parametrize("statistic", ["mean", "median", "p90", "p5"])
@pytest.mark.parametrize("method", ["percentile", "bca"])
@pytest.mark.parametrize("n", [2, 7, 60, 501])
def test_bootstrap_matches_scipy_with_the_same_resamples(statistic, method, n):
    # The same seed draws the same resamples as scipy.stats.bootstrap: the intervals agree
    # to rounding.
    x = sample(n, n, "lognormal")
    ours = stats.bootstrap_interval(x, statistic, 0.9, resamples=999, seed=n, method=method)
    ref = scipy_bootstrap(x, SCIPY_STATISTIC[statistic], 0.9, 999, n,
                          "BCa" if method == "bca" else "percentile")
    assert ours == pytest.approx(ref, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("method", ["percentile", "bca"])
def test_bootstrap_agrees_with_scipy_across_seeds(method):
    # Different resamples: the intervals agree within the resampling error.
    x = sample(3, 300, "lognormal")
    ours = stats.bootstrap_interval(x, "mean", 0.95, resamples=4000, seed=0, method=method)
    ref = scipy_bootstrap(x, np.mean, 0.95, 4000, 12345, "BCa" if method == "bca" else
                          "percentile")
    width = ref[1] - ref[0]
    assert abs(ours[0] - ref[0]) < 0.05 * width
    assert abs(ours[1] - ref[1]) < 0.05 * width


def test_bootstrap_batches_draw_the_same_stream():
    # 3,000 values x 1,000 resamples is drawn in several batches; still scipy's resamples.
    x = sample(4, 3000)
    ours = stats.bootstrap_interval(x, "median", resamples=1000, seed=7)
    assert ours == pytest.approx(scipy_bootstrap(x, np.median, 0.95, 1000, 7, "percentile"),
                                 rel=1e-12)


def test_bootstrap_callable_statistic():
    x = sample(5, 40, "lognormal")
    ours = stats.bootstrap_interval(x, lambda a: np.std(a, axis=-1), resamples=500, seed=1,
                                    method="bca")
    assert ours == pytest.approx(scipy_bootstrap(x, np.std, 0.95, 500, 1, "BCa"), rel=1e-9)
    with pytest.raises(ValueError, match="reduce the last axis"):
        stats.bootstrap_interval(x, np.mean)      # no axis: one number for the whole array


def test_bootstrap_is_deterministic_and_seeded():
    x = sample(6, 50)
    assert stats.bootstrap_interval(x) == stats.bootstrap_interval(x)
    assert stats.bootstrap_interval(x, seed=1) != stats.bootstrap_interval(x, seed=2)


def test_bootstrap_edges():
    assert stats.bootstrap_interval([3.5]) == (3.5, 3.5)
    assert stats.bootstrap_interval([2.0] * 20) == (2.0, 2.0)
    assert stats.bootstrap_interval([2.0] * 20, method="bca") == (2.0, 2.0)
    assert stats.bootstrap_interval([1.0] * 19 + [5.0], "median", method="bca") == (1.0, 1.0)
    low, high = stats.bootstrap_interval([0.0, 1.0], "mean", method="bca")
    assert 0.0 <= low <= high <= 1.0


@pytest.mark.parametrize("kwargs,match", [
    ({"values": []}, "empty"), ({"values": [1.0, math.nan]}, "finite"),
    ({"statistic": "mode"}, "statistic"), ({"statistic": "p101"}, "statistic"),
    ({"method": "basic"}, "method"), ({"resamples": 0}, "resamples"),
    ({"resamples": 2.5}, "resamples"), ({"seed": -1}, "seed"), ({"level": 0}, "level"),
])
def test_bootstrap_bad_input(kwargs, match):
    args = {"values": [1.0, 2.0, 3.0], **kwargs}
    with pytest.raises(ValueError, match=match):
        stats.bootstrap_interval(**args)


def test_mean_interval():
    x = sample(8, 30)
    assert stats.mean_interval(x, 0.9, method="t") == stats.t_interval(x, 0.9)
    assert stats.mean_interval(x, 0.9) == stats.bootstrap_interval(x, "mean", 0.9)
    assert stats.mean_interval(x, resamples=300, seed=4, method="bootstrap") == \
        stats.bootstrap_interval(x, resamples=300, seed=4)
    with pytest.raises(ValueError, match="takes no"):
        stats.mean_interval(x, method="t", resamples=10)
    with pytest.raises(ValueError, match="method"):
        stats.mean_interval(x, method="normal")  # type: ignore[arg-type]


# -- McNemar ---------------------------------------------------------------------------------


@pytest.mark.parametrize("b,c", [(1, 0), (0, 1), (5, 0), (3, 7), (7, 3), (10, 10), (11, 10),
                                 (12, 2), (40, 55), (0, 60), (1000, 1100), (9000, 9400)])
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_mcnemar_matches_binomtest(b, c, alternative):
    ref = scipy_stats.binomtest(b, b + c, 0.5, alternative=alternative).pvalue
    assert stats.mcnemar_exact(b, c, alternative) == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("b,c", [(10400, 10000), (15000, 15800), (30, 30000)])
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_mcnemar_large_counts(b, c, alternative):
    # Above 20,000 discordant pairs the tail is summed in floating point.
    ref = scipy_stats.binomtest(b, b + c, 0.5, alternative=alternative).pvalue
    assert stats.mcnemar_exact(b, c, alternative) == pytest.approx(ref, rel=1e-8, abs=1e-300)


@pytest.mark.parametrize("b,c", [(1, 0), (5, 1), (8, 3), (3, 8), (12, 12), (40, 25)])
def test_mcnemar_mid_p(b, c):
    n = b + c
    pmf = scipy_stats.binom.pmf(b, n, 0.5)
    greater = scipy_stats.binom.sf(b - 1, n, 0.5) - 0.5 * pmf
    less = scipy_stats.binom.cdf(b, n, 0.5) - 0.5 * pmf
    assert stats.mcnemar_exact(b, c, "greater", mid_p=True) == pytest.approx(greater)
    assert stats.mcnemar_exact(b, c, "less", mid_p=True) == pytest.approx(less)
    two = 1.0 if b == c else min(1.0, 2 * min(greater, less))
    assert stats.mcnemar_exact(b, c, mid_p=True) == pytest.approx(two)
    assert stats.mcnemar_exact(b, c, "greater", mid_p=True) <= stats.mcnemar_exact(b, c,
                                                                                  "greater")


def test_mcnemar_edges_and_bad_input():
    assert stats.mcnemar_exact(0, 0) == 1.0
    assert stats.mcnemar_exact(0, 0, "greater") == 1.0
    assert stats.mcnemar_exact(9, 1, "greater") == 11 / 1024
    for args, match in [((-1, 2), "b="), ((1, -2), "c="), ((1.5, 2), "b="),
                        ((1, 2, "bigger"), "alternative")]:
        with pytest.raises(ValueError, match=match):
            stats.mcnemar_exact(*args)


# -- Wilcoxon --------------------------------------------------------------------------------


def scipy_wilcoxon(d, alternative, method, correction=True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(scipy_stats.wilcoxon(d, zero_method="wilcox", correction=correction,
                                          alternative=alternative, method=method).pvalue)


@pytest.mark.parametrize("n", [1, 2, 5, 12, 25, 50])
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_wilcoxon_exact_matches_scipy(n, alternative):
    d = sample(n, n) - 0.55                       # continuous: no ties, no zeros
    ref = scipy_wilcoxon(d, alternative, "exact")
    assert stats.wilcoxon_signed_rank(d, alternative) == pytest.approx(ref, rel=1e-12)
    assert stats.wilcoxon_signed_rank(d, alternative, method="exact") == \
        pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_wilcoxon_ties_exact_matches_scipy_permutation(seed, alternative):
    # Ties (and zeros, dropped): the exact sign-flip distribution of the tied ranks, the
    # permutation test scipy enumerates completely for up to 13 differences.
    rng = np.random.default_rng(seed)
    d = np.append(rng.integers(-2, 4, 11), 0).astype(float)
    nonzero = d[d != 0]
    ref = scipy_wilcoxon(nonzero, alternative, scipy_stats.PermutationMethod())
    assert stats.wilcoxon_signed_rank(d, alternative) == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("kind", ["normal", "likert", "rounded"])
@pytest.mark.parametrize("n", [30, 60, 400])
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
@pytest.mark.parametrize("correction", [True, False])
def test_wilcoxon_approx_matches_scipy(kind, n, alternative, correction):
    # Normal approximation with the tie correction (ties and zeros in "likert" and
    # "rounded") and, optionally, the continuity correction.
    if kind == "likert":
        d = sample(n, n, "likert") - sample(n + 1, n, "likert")
    elif kind == "rounded":
        d = np.round(sample(n, n) - 0.45, 1)
    else:
        d = sample(n, n) - 0.45
    ref = scipy_wilcoxon(d, alternative, "asymptotic", correction)
    ours = stats.wilcoxon_signed_rank(d, alternative, method="approx", correction=correction)
    assert ours == pytest.approx(ref, rel=1e-10, abs=1e-15)
    if np.count_nonzero(d) > 50:   # "auto": the approximation above 50 non-zero differences
        assert stats.wilcoxon_signed_rank(d, alternative, correction=correction) == ours


def test_wilcoxon_edges_and_bad_input():
    assert stats.wilcoxon_signed_rank([]) == 1.0
    assert stats.wilcoxon_signed_rank([0.0, 0.0, 0.0]) == 1.0
    assert stats.wilcoxon_signed_rank([0.0] * 100, method="approx") == 1.0
    assert stats.wilcoxon_signed_rank([0.3], "greater") == 0.5
    assert stats.wilcoxon_signed_rank([0.3], "less") == 1.0
    assert stats.wilcoxon_signed_rank([-1.0] * 6, "less") == 1 / 64      # all ties
    assert stats.wilcoxon_signed_rank([-1.0] * 6) == 2 / 64
    for kwargs, match in [({"alternative": "lower"}, "alternative"),
                          ({"method": "asymptotic"}, "method"),
                          ({"diffs": [1.0, math.nan]}, "finite")]:
        with pytest.raises(ValueError, match=match):
            stats.wilcoxon_signed_rank(**{"diffs": [1.0, -2.0, 3.0], **kwargs})


# -- paired bootstrap ------------------------------------------------------------------------


def test_paired_bootstrap_interval_and_p_values():
    base = sample(10, 80)
    current = base - 0.05 + np.random.default_rng(11).normal(0, 0.1, 80)
    res = stats.paired_bootstrap(current, base, level=0.9, resamples=3000, seed=5)
    diffs = current - base
    assert res.n == 80 and res.resamples == 3000 and res.level == 0.9
    assert res.mean_diff == pytest.approx(float(np.mean(diffs)))
    ref = scipy_bootstrap(diffs, np.mean, 0.9, 3000, 5, "percentile")
    assert res.ci == pytest.approx(ref, rel=1e-9)
    # The p-values as documented, from the same resamples.
    idx = np.random.default_rng(5).integers(0, 80, (3000, 80))
    means = diffs[idx].mean(axis=1)
    assert res.p_less == (1 + np.count_nonzero(means >= 0)) / 3001
    assert res.p_greater == (1 + np.count_nonzero(means <= 0)) / 3001
    assert res.p_two_sided == min(1.0, 2 * min(res.p_less, res.p_greater))
    assert res.p_less < 0.01 < 0.99 < res.p_greater


def test_paired_bootstrap_agrees_with_scipy_paired():
    base = sample(12, 100)
    current = base + np.random.default_rng(13).normal(0.02, 0.1, 100)
    res = stats.paired_bootstrap(current, base, resamples=4000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = scipy_stats.bootstrap((current, base), lambda x, y, axis=-1:
                                    np.mean(x - y, axis=axis), paired=True, n_resamples=4000,
                                    method="percentile", rng=np.random.default_rng(99))
    width = ref.confidence_interval.high - ref.confidence_interval.low
    assert abs(res.ci[0] - ref.confidence_interval.low) < 0.05 * width
    assert abs(res.ci[1] - ref.confidence_interval.high) < 0.05 * width


def test_paired_bootstrap_edges_and_bad_input():
    same = stats.paired_bootstrap([0.5, 0.7, 0.9], [0.5, 0.7, 0.9])
    assert same.mean_diff == 0.0 and same.ci == (0.0, 0.0)
    assert same.p_less == same.p_greater == same.p_two_sided == 1.0
    one = stats.paired_bootstrap([1.0], [0.0], resamples=10)
    assert one.ci == (1.0, 1.0) and one.p_greater == 1 / 11
    with pytest.raises(ValueError, match="same length"):
        stats.paired_bootstrap([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="empty"):
        stats.paired_bootstrap([], [])
    with pytest.raises(ValueError, match=r"baseline\[0\]"):
        stats.paired_bootstrap([1.0], [math.nan])


# -- paired proportions (Tango) --------------------------------------------------------------


def tango_reference(b: int, c: int, n: int, level: float) -> tuple[float, float]:
    """Tango's interval computed independently: the constrained maximum likelihood by
    numerical optimisation of the multinomial likelihood, the limits by Brent's method."""
    z = float(scipy_stats.norm.isf((1 - level) / 2))
    m = n - b - c

    def score(d: float) -> float:
        # q = P(passed, now fails); the "fails, now passes" cell is then q + d.
        lo, hi = max(0.0, -d), (1.0 - d) / 2.0

        def nll(q: float) -> float:
            cells = [(b, q), (c, q + d), (m, 1.0 - 2.0 * q - d)]
            return -sum(k * math.log(max(p, 1e-300)) for k, p in cells if k)

        q = scipy_optimize.minimize_scalar(nll, bounds=(lo, hi), method="bounded",
                                           options={"xatol": 1e-13}).x
        return ((c - b) - n * d) / math.sqrt(n * (2.0 * q + d * (1.0 - d)))

    est = (c - b) / n
    edge = 1e-9
    low = (-1.0 if score(-1 + edge) <= z else
           scipy_optimize.brentq(lambda d: score(d) - z, -1 + edge, est, xtol=1e-13))
    high = (1.0 if score(1 - edge) >= -z else
            scipy_optimize.brentq(lambda d: score(d) + z, est, 1 - edge, xtol=1e-13))
    return low, high


@pytest.mark.parametrize("b,c,n", [(12, 2, 200), (40, 20, 160), (0, 0, 50), (5, 0, 20),
                                   (0, 5, 20), (3, 4, 10), (1, 7, 21), (10, 10, 20),
                                   (2, 1, 1000), (30, 2, 32)])
@pytest.mark.parametrize("level", [0.9, 0.95])
def test_paired_proportion_interval_matches_reference(b, c, n, level):
    ours = stats.paired_proportion_interval(b, c, n, level)
    ref = tango_reference(b, c, n, level)
    assert ours == pytest.approx(ref, abs=1e-6)
    assert -1.0 <= ours[0] <= (c - b) / n <= ours[1] <= 1.0


def test_paired_proportion_interval_properties():
    z = float(scipy_stats.norm.isf(0.025))
    # No discordant pair: closed form +-z^2 / (n + z^2).
    assert stats.paired_proportion_interval(0, 0, 100) == pytest.approx(
        (-z * z / (100 + z * z), z * z / (100 + z * z)), rel=1e-9)
    low, high = stats.paired_proportion_interval(3, 9, 120)
    assert stats.paired_proportion_interval(9, 3, 120) == pytest.approx((-high, -low))
    assert stats.paired_proportion_interval(0, 0, 0) == (-1.0, 1.0)
    assert stats.paired_proportion_interval(5, 0, 5) == pytest.approx(
        (-1.0, stats.paired_proportion_interval(5, 0, 5)[1]))
    narrow = stats.paired_proportion_interval(12, 2, 200, 0.8)
    wide = stats.paired_proportion_interval(12, 2, 200, 0.99)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]
    for args, match in [((5, 6, 10), "larger than n"), ((-1, 0, 10), "b="),
                        ((0, 0, 10, 2.0), "level")]:
        with pytest.raises(ValueError, match=match):
            stats.paired_proportion_interval(*args)


# -- regression_test -------------------------------------------------------------------------


def verdicts(pass_fail: str) -> list[bool]:
    return [ch == "1" for ch in pass_fail]


def test_regression_binary():
    base = [True] * 200
    current = [True] * 180 + [False] * 20
    t = stats.regression_test(current, base, kind="binary")
    assert (t.kind, t.method, t.interval_method) == ("binary", "mcnemar-mid-p", "tango-score")
    assert (t.n, t.dropped, t.newly_failing, t.newly_passing) == (200, 0, 20, 0)
    assert (t.baseline_value, t.current_value) == (1.0, 0.9)
    assert t.diff == pytest.approx(-0.1)
    assert t.p_value == stats.mcnemar_exact(20, 0, "greater", mid_p=True) == 0.5 ** 21
    assert t.ci == stats.paired_proportion_interval(20, 0, 200, 0.95)
    assert t.bound == pytest.approx(stats.paired_proportion_interval(20, 0, 200, 0.9)[1])
    assert t.significant and t.regression and t.bound < 0
    assert "regression" in t.summary() and "20 newly failing" in t.summary()
    with pytest.raises(FrozenInstanceError):
        t.regression = False  # type: ignore[misc]


def test_regression_binary_noise_and_improvement():
    rng = np.random.default_rng(0)
    base = list(rng.random(200) < 0.8)
    current = list(base)
    for i in (3, 50, 77):          # a few flips either way: judge noise
        current[i] = not current[i]
    t = stats.regression_test(current, base, kind="binary")
    assert not t.significant and not t.regression
    better = stats.regression_test([True] * 200, [True] * 170 + [False] * 30, kind="binary")
    assert better.diff > 0 and better.p_value > 0.99 and not better.regression
    assert better.newly_passing == 30 and better.newly_failing == 0


def test_regression_binary_lower_is_better():
    # True is the bad outcome (e.g. "hallucinated"): more Trues now is worse.
    base = [False] * 100
    current = [True] * 12 + [False] * 88
    t = stats.regression_test(current, base, kind="binary", higher_is_better=False)
    assert t.diff == pytest.approx(0.12) and t.newly_failing == 12 and t.regression
    assert t.bound == pytest.approx(stats.paired_proportion_interval(0, 12, 100, 0.9)[0])
    assert not stats.regression_test(base, current, kind="binary",
                                     higher_is_better=False).regression


def test_regression_binary_tolerance():
    # 12 newly failing, 2 newly passing of 400: a 2.5-point drop, clearly significant.
    base = [True] * 400
    current = [False] * 12 + [True] * 388
    base[-2:] = [False, False]
    t0 = stats.regression_test(current, base, kind="binary")
    assert t0.regression
    # The drop is significant, but it is not shown to exceed a 2-point tolerance ...
    t2 = stats.regression_test(current, base, kind="binary", tolerance=0.02)
    assert t2.significant and not t2.regression and t2.bound > -0.02
    assert "tolerance" in t2.summary()
    # ... while a 0.5-point tolerance is exceeded with confidence.
    assert stats.regression_test(current, base, kind="binary", tolerance=0.005).regression


def test_regression_binary_mid_p():
    current, base = [False] * 6 + [True] * 94, [True] * 100
    base[-1] = False                       # b = 6, c = 1
    exact = stats.regression_test(current, base, kind="binary", method="exact")
    mid = stats.regression_test(current, base, kind="binary")  # the default
    assert (exact.method, mid.method) == ("mcnemar-exact", "mcnemar-mid-p")
    assert exact.p_value == 8 / 128 and mid.p_value == pytest.approx(4.5 / 128)
    assert mid.p_value == stats.mcnemar_exact(6, 1, "greater", mid_p=True)
    assert not exact.regression and mid.regression


def test_regression_drops_missing_pairs():
    current = [True, None, False, True, True, False]
    base = [True, True, None, True, None, True]
    t = stats.regression_test(current, base, kind="binary")
    assert (t.n, t.dropped, t.newly_failing) == (3, 3, 1)
    assert stats.regression_test([0.5, math.nan, 0.2], [0.4, 0.1, None], kind="numeric",
                                 resamples=100).n == 1
    empty = stats.regression_test([None, True], [False, None], kind="binary")
    assert (empty.n, empty.dropped, empty.p_value, empty.regression) == (0, 2, 1.0, False)
    assert math.isnan(empty.diff) and empty.newly_failing == 0
    assert "nothing to compare" in empty.summary()
    none = stats.regression_test([], [], kind="numeric")
    assert none.n == 0 and not none.significant and none.newly_failing is None


def test_regression_numeric():
    rng = np.random.default_rng(1)
    truth = rng.beta(5, 2, 150)
    base = truth + rng.normal(0, 0.1, 150)
    current = truth - 0.06 + rng.normal(0, 0.1, 150)
    t = stats.regression_test(list(current), list(base), kind="numeric")
    diffs = current - base
    assert (t.method, t.interval_method) == ("wilcoxon-signed-rank", "bootstrap-percentile")
    assert t.p_value == stats.wilcoxon_signed_rank(diffs, "less")
    paired = stats.paired_bootstrap(current, base)
    assert t.ci == paired.ci and t.diff == pytest.approx(paired.mean_diff)
    assert t.current_value == pytest.approx(float(np.mean(current)))
    assert t.newly_failing is None and t.regression and t.bound < 0
    b = stats.regression_test(list(current), list(base), kind="numeric", method="bootstrap")
    assert b.method == "paired-bootstrap" and b.p_value == paired.p_less and b.regression
    # Lower is better (e.g. latency): the same change is an improvement.
    assert not stats.regression_test(list(current), list(base), kind="numeric",
                                     higher_is_better=False).regression
    # Deterministic.
    assert stats.regression_test(list(current), list(base), kind="numeric") == t


def test_regression_numeric_tolerance():
    rng = np.random.default_rng(2)
    base = rng.normal(0.7, 0.1, 300)
    current = base - 0.03 + rng.normal(0, 0.02, 300)      # a clear 0.03 drop
    assert stats.regression_test(list(current), list(base), kind="numeric",
                                 tolerance=0.02).regression
    t = stats.regression_test(list(current), list(base), kind="numeric", tolerance=0.05)
    assert t.significant and not t.regression and t.bound > -0.05


def test_regression_numeric_wilcoxon_sign_guard():
    # Most rows drop a little, a few rise a lot: the signed-rank test sees a drop while the
    # mean went up; no regression is reported against a mean that improved.
    current = [0.9] * 10 + [0.45] * 40
    base = [0.1] * 10 + [0.5] * 40
    t = stats.regression_test(current, base, kind="numeric", resamples=200)
    assert t.significant and t.diff > 0 and not t.regression


@pytest.mark.parametrize("kwargs,match", [
    ({"kind": "score"}, "kind"), ({"alpha": 0.0}, "alpha"), ({"alpha": 5}, "alpha"),
    ({"tolerance": -0.01}, "tolerance"), ({"tolerance": math.inf}, "tolerance"),
    ({"level": 1.0}, "level"), ({"method": "bootstrap"}, "method"),
    ({"method": "wilcoxon"}, "method"), ({"seed": -3}, "seed"),
    ({"current": [True, "yes"]}, r"current\[1\]"), ({"baseline": [True, 2]}, r"baseline\[1\]"),
    ({"current": [True]}, "same length"), ({"current": "10"}, "string"),
])
def test_regression_bad_input(kwargs, match):
    args = {"current": [True, False], "baseline": [True, True], "kind": "binary", **kwargs}
    with pytest.raises(ValueError, match=match):
        stats.regression_test(**args)


@pytest.mark.parametrize("kwargs,match", [
    ({"method": "exact"}, "method"), ({"current": [0.5, "0.7"]}, r"current\[1\]"),
    ({"current": [0.5, math.inf]}, "finite"), ({"resamples": 0}, "resamples"),
])
def test_regression_numeric_bad_input(kwargs, match):
    args = {"current": [0.5, 0.6], "baseline": [0.5, 0.7], "kind": "numeric", **kwargs}
    with pytest.raises(ValueError, match=match):
        stats.regression_test(**args)
