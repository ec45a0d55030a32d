"""The statistics behind CI quality gates: confidence intervals, paired tests, and the
one decision a gate makes, "is this a regression or judge noise?".

Everything here is pure and deterministic. Bootstrap functions take a ``seed`` (fixed
by default) and draw from ``numpy.random.default_rng(seed)``, so the same inputs give
the same interval on every machine and every run. numpy is imported inside the
functions (it is always installed, pandas needs it) so ``import assay`` stays light;
scipy is not needed at run time (the tests compare against it).

Conventions:

- A paired comparison is ``current`` against ``baseline``, row by row; a difference is
  always ``current - baseline``.
- For pass/fail verdicts, ``b`` counts the rows that passed in the baseline and fail
  now, ``c`` the rows that failed in the baseline and pass now.
- ``level`` is a two-sided confidence level in (0, 1); ``alpha`` a significance level.

Example:
    >>> from assay.evaluate import stats
    >>> [round(x, 4) for x in stats.wilson_interval(45, 50)]
    [0.7864, 0.9565]
    >>> t = stats.regression_test([True] * 180 + [False] * 20, [True] * 200, kind="binary")
    >>> t.regression, t.newly_failing
    (True, 20)
"""

from __future__ import annotations

import math
import numbers
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import ArrayLike, NDArray

    FloatArray = NDArray[np.float64]
    #: A bootstrap statistic: ``"mean"``, ``"median"``, ``"p<N>"`` (linear-interpolated
    #: percentile, as in :func:`assay.evaluate.scorers.aggregate`), or a callable that
    #: takes a 2-D array (one resample per row) and returns one value per row.
    Statistic = str | Callable[[FloatArray], ArrayLike]

__all__ = [
    "PairedDiff",
    "RegressionTest",
    "bootstrap_interval",
    "mcnemar_exact",
    "mean_interval",
    "paired_bootstrap",
    "paired_proportion_interval",
    "regression_test",
    "t_interval",
    "wilcoxon_signed_rank",
    "wilson_interval",
]

Alternative = Literal["two-sided", "greater", "less"]
_ALTERNATIVES = ("two-sided", "greater", "less")
_PERCENTILE = re.compile(r"^p(\d{1,2}(?:\.\d+)?|100)$")
_NORMAL = NormalDist()
# Resampled values held in memory at once (resamples x n); larger jobs go in batches.
_BATCH_ELEMENTS = 1_000_000
# Signed-rank tests on at most this many non-zero differences use the exact
# (sign-flip) distribution; above it, the normal approximation.
_WILCOXON_EXACT_MAX_N = 50
# Above this many discordant pairs, McNemar's tail is summed in floating point.
_MCNEMAR_EXACT_INT_MAX_N = 20_000


# -- validation ------------------------------------------------------------------------------


def _check_level(level: float, name: str = "level") -> float:
    if isinstance(level, bool) or not isinstance(level, numbers.Real):
        raise ValueError(f"{name}={level!r}: expected a number between 0 and 1")
    value = float(level)
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name}={level!r}: expected a number strictly between 0 and 1")
    return value


def _check_count(value: int, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name}={value!r}: expected a non-negative integer, not a bool")
    try:
        count = operator.index(value)
    except TypeError:
        raise ValueError(f"{name}={value!r}: expected a non-negative integer") from None
    if count < 0:
        raise ValueError(f"{name}={value!r}: expected a non-negative integer")
    return count


def _check_alternative(alternative: Alternative) -> Alternative:
    if alternative not in _ALTERNATIVES:
        raise ValueError(f"alternative={alternative!r}: expected one of "
                         f"{', '.join(repr(a) for a in _ALTERNATIVES)}")
    return alternative


def _as_array(values: ArrayLike, name: str) -> FloatArray:
    """``values`` as a 1-D float array of finite numbers."""
    import numpy as np

    if isinstance(values, (str, bytes)):
        raise ValueError(f"{name}: expected a sequence of numbers, got a string")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a sequence of numbers") from None
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a one-dimensional sequence of numbers, "
                         f"got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        bad = int(np.flatnonzero(~np.isfinite(array))[0])
        raise ValueError(f"{name}[{bad}] is {array[bad]!r}: expected finite numbers")
    return array


def _check_resamples(resamples: int) -> int:
    count = _check_count(resamples, "resamples")
    if count < 1:
        raise ValueError(f"resamples={resamples!r}: expected at least 1")
    return count


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool):
        raise ValueError(f"seed={seed!r}: expected a non-negative integer, not a bool")
    return _check_count(seed, "seed")


# -- distributions (normal, Student t, binomial) ---------------------------------------------


def _z(level: float) -> float:
    """The two-sided normal critical value for ``level`` (1.959964 for 0.95)."""
    return _NORMAL.inv_cdf(0.5 + 0.5 * level)


def _normal_sf(z: float) -> float:
    """P(Z > z), accurate in the far tail."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        step = d * c
        h *= step
        if abs(step - 1.0) < 1e-16:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom, t >= 0."""
    return 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))


def _t_pdf(t: float, df: float) -> float:
    log_pdf = (math.lgamma((df + 1.0) / 2.0) - math.lgamma(df / 2.0)
               - 0.5 * math.log(df * math.pi) - (df + 1.0) / 2.0 * math.log1p(t * t / df))
    return math.exp(log_pdf)


def _t_isf(p: float, df: float) -> float:
    """The t value with P(T > t) = p, for 0 < p < 0.5 (Newton's method, bracketed)."""
    if df == 1.0:
        return math.tan(math.pi * (0.5 - p))
    if df == 2.0:
        q = 1.0 - p
        return (2.0 * q - 1.0) / math.sqrt(2.0 * q * p)
    z = -_NORMAL.inv_cdf(p)
    # Cornish-Fisher expansion: a close first guess for df >= 3, and accurate to about
    # 1e-15 (relative) on its own from a few thousand degrees of freedom.
    t = (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
         + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3)
         + (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z)
         / (92160 * df ** 4))
    if df >= 2000:
        return t
    low, high = 0.0, max(t, 1.0)
    while _t_sf(high, df) > p:
        low, high = high, high * 2.0
    t = min(max(t, low), high)
    for _ in range(100):
        excess = _t_sf(t, df) - p         # > 0: t is too small
        if excess > 0:
            low = t
        else:
            high = t
        step = excess / _t_pdf(t, df)
        candidate = t + step
        if not low < candidate < high:
            candidate = 0.5 * (low + high)
        if abs(candidate - t) <= 1e-15 * max(1.0, abs(t)):
            return candidate
        t = candidate
    return t


def _binom_half_cdf(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if n <= _MCNEMAR_EXACT_INT_MAX_N:
        # Exact rational arithmetic, summing the shorter tail; int / int rounds correctly.
        def tail(upto: int) -> int:
            term, total = 1, 1
            for i in range(1, upto + 1):
                term = term * (n - i + 1) // i
                total += term
            return total

        if 2 * k < n:
            return tail(k) / 2 ** n
        return (2 ** n - tail(n - k - 1)) / 2 ** n
    # Large n: sum the shorter tail in floating point from its largest term outwards.
    upto = k if 2 * k < n else n - k - 1
    log_term = (math.lgamma(n + 1) - math.lgamma(upto + 1) - math.lgamma(n - upto + 1)
                - n * math.log(2.0))
    term = math.exp(log_term)
    total = 0.0
    i = upto
    while i >= 0 and term > 0.0:
        total += term
        if term < 1e-17 * total:
            break
        term *= i / (n - i + 1)
        i -= 1
    return total if 2 * k < n else 1.0 - total


def _binom_half_pmf(k: int, n: int) -> float:
    """P(X = k) for X ~ Binomial(n, 1/2)."""
    if n <= _MCNEMAR_EXACT_INT_MAX_N:
        return math.comb(n, k) / 2 ** n
    return math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                    - n * math.log(2.0))


# -- intervals -------------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval for a proportion (no continuity correction).

    Args:
        successes: How many of the ``n`` trials succeeded (0 <= successes <= n).
        n: The number of trials; 0 gives the uninformative interval ``(0.0, 1.0)``.
        level: Two-sided confidence level.

    Returns:
        ``(low, high)`` within [0, 1]; ``low`` is exactly 0 when ``successes == 0`` and
        ``high`` exactly 1 when ``successes == n``.

    Example:
        >>> [round(x, 4) for x in wilson_interval(8, 10)]
        [0.4902, 0.9433]
    """
    k = _check_count(successes, "successes")
    total = _check_count(n, "n")
    level = _check_level(level)
    if k > total:
        raise ValueError(f"successes={successes!r} is larger than n={n!r}")
    if total == 0:
        return (0.0, 1.0)
    z = _z(level)
    p = k / total
    denom = 2.0 * (total + z * z)
    center = (2.0 * total * p + z * z) / denom
    half = z / denom * math.sqrt(4.0 * total * p * (1.0 - p) + z * z)
    low = 0.0 if k == 0 else max(0.0, center - half)
    high = 1.0 if k == total else min(1.0, center + half)
    return (low, high)


def t_interval(values: ArrayLike, level: float = 0.95) -> tuple[float, float]:
    """The Student t confidence interval for a mean.

    Args:
        values: The sample (finite numbers, at least one).
        level: Two-sided confidence level.

    Returns:
        ``(low, high)``. With a single value, or when every value is equal, the sample
        carries no information on the spread and the interval is ``(mean, mean)``.

    Raises:
        ValueError: ``values`` is empty, holds a non-finite number, or ``level`` is not
            in (0, 1).

    Example:
        >>> [round(x, 4) for x in t_interval([1.0, 2.0, 3.0, 4.0])]
        [0.4457, 4.5543]
    """
    import numpy as np

    data = _as_array(values, "values")
    level = _check_level(level)
    if data.size == 0:
        raise ValueError("values: empty; a confidence interval needs at least one value")
    mean = float(np.mean(data))
    if data.size == 1:
        return (mean, mean)
    sd = float(np.std(data, ddof=1))
    if sd == 0.0:
        return (mean, mean)
    half = _t_isf((1.0 - level) / 2.0, float(data.size - 1)) * sd / math.sqrt(data.size)
    return (mean - half, mean + half)


def _statistic_function(statistic: Statistic) -> Callable[[FloatArray], FloatArray]:
    """A function reducing a (rows, n) array along its last axis to ``rows`` values."""
    import numpy as np

    if callable(statistic):
        func = statistic

        def call(sample: FloatArray) -> FloatArray:
            out = np.asarray(func(sample), dtype=np.float64)
            if out.shape != sample.shape[:-1]:
                raise ValueError(f"statistic: the callable returned shape {out.shape} for "
                                 f"a {sample.shape} array; it must reduce the last axis "
                                 f"(e.g. lambda a: np.mean(a, axis=-1))")
            return out

        return call
    if statistic == "mean":
        return lambda a: np.mean(a, axis=-1)
    if statistic == "median":
        return lambda a: np.median(a, axis=-1)
    if isinstance(statistic, str) and _PERCENTILE.match(statistic):
        q = float(statistic[1:])
        return lambda a: np.percentile(a, q, axis=-1)
    raise ValueError(f"statistic={statistic!r}: expected 'mean', 'median', a percentile "
                     f"such as 'p90', or a callable over a 2-D array (axis=-1)")


def _bootstrap_distribution(data: FloatArray, func: Callable[[FloatArray], FloatArray],
                            resamples: int, seed: int) -> FloatArray:
    """The statistic over ``resamples`` resamples of ``data`` (with replacement).

    Resample i is ``data[idx[i]]`` with ``idx = default_rng(seed).integers(0, n,
    (resamples, n))``, drawn in batches of whole rows (the same stream as one draw).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    n = data.size
    rows = max(1, _BATCH_ELEMENTS // n)
    parts = []
    for start in range(0, resamples, rows):
        count = min(rows, resamples - start)
        idx = rng.integers(0, n, size=(count, n))
        parts.append(func(data[idx]))
    return np.concatenate(parts)


def _jackknife(data: FloatArray, func: Callable[[FloatArray], FloatArray],
               statistic: Statistic) -> FloatArray:
    """The statistic with each value left out in turn."""
    import numpy as np

    n = data.size
    if statistic == "mean":
        return (np.sum(data) - data) / (n - 1)
    if isinstance(statistic, str):
        # A percentile of the values without the one at sorted position j: index i of the
        # remaining n - 1 sorted values is index i + (i >= j) of all of them.
        q = 50.0 if statistic == "median" else float(statistic[1:])
        ordered = np.sort(data)
        rank = q / 100.0 * (n - 2)
        low = math.floor(rank)
        high = min(low + 1, n - 2)
        j = np.arange(n)
        below = ordered[low + (low >= j)]
        above = ordered[high + (high >= j)]
        return below + (above - below) * (rank - low)
    rows = max(1, _BATCH_ELEMENTS // n)
    positions = np.arange(n - 1)
    parts = []
    for start in range(0, n, rows):
        left_out = np.arange(start, min(n, start + rows))
        idx = positions[None, :] + (positions[None, :] >= left_out[:, None])
        parts.append(func(data[idx]))
    return np.concatenate(parts)


def bootstrap_interval(values: ArrayLike, statistic: Statistic = "mean", level: float = 0.95,
                       resamples: int = 2000, seed: int = 0,
                       method: Literal["percentile", "bca"] = "percentile",
                       ) -> tuple[float, float]:
    """A bootstrap confidence interval for a statistic of one sample.

    ``"percentile"`` takes the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles
    (linear interpolation) of the bootstrap distribution. ``"bca"`` is the
    bias-corrected and accelerated interval (Efron & Tibshirani 1993, 14.3), with the
    acceleration from the jackknife; it follows ``scipy.stats.bootstrap(method="BCa")``.
    With the same seed both draw the same resamples as ``scipy.stats.bootstrap(...,
    rng=numpy.random.default_rng(seed))``.

    Args:
        values: The sample (finite numbers, at least one).
        statistic: ``"mean"``, ``"median"``, ``"p<N>"`` (e.g. ``"p90"``, linear
            interpolation), or a callable taking a 2-D array (one resample per row) and
            returning one value per row, e.g. ``lambda a: a.std(axis=-1)``.
        level: Two-sided confidence level.
        resamples: How many bootstrap resamples.
        seed: Seed of ``numpy.random.default_rng``; the same seed gives the same interval.
        method: ``"percentile"`` or ``"bca"``.

    Returns:
        ``(low, high)``. A single value, or a sample whose resamples all give the same
        statistic, gives a zero-width interval at that value. For BCa, a bias
        correction beyond the bootstrap distribution is clipped to its outermost
        resample (scipy returns nan there).

    Example:
        >>> bootstrap_interval([0.2, 0.4, 0.5, 0.9, 1.0], "median", resamples=1000)
        (0.2, 1.0)
    """
    import numpy as np

    data = _as_array(values, "values")
    level = _check_level(level)
    resamples = _check_resamples(resamples)
    seed = _check_seed(seed)
    if method not in ("percentile", "bca"):
        raise ValueError(f"method={method!r}: expected 'percentile' or 'bca'")
    func = _statistic_function(statistic)
    if data.size == 0:
        raise ValueError("values: empty; a confidence interval needs at least one value")
    if data.size == 1:
        value = float(func(data[None, :])[0])
        return (value, value)
    dist = _bootstrap_distribution(data, func, resamples, seed)
    if not np.all(np.isfinite(dist)):
        raise ValueError("statistic: returned a non-finite value on a resample")
    if dist.min() == dist.max():
        value = float(dist[0])
        return (value, value)
    alpha = (1.0 - level) / 2.0
    if method == "percentile":
        low_q, high_q = alpha, 1.0 - alpha
    else:
        low_q, high_q = _bca_quantiles(data, func, statistic, dist, alpha)
    low, high = np.quantile(dist, [low_q, high_q])
    return (float(low), float(high))


def _bca_quantiles(data: FloatArray, func: Callable[[FloatArray], FloatArray],
                   statistic: Statistic, dist: FloatArray, alpha: float) -> tuple[float, float]:
    """The BCa-adjusted quantile levels for a two-sided interval with tails ``alpha``."""
    import numpy as np

    theta = float(func(data[None, :])[0])
    b = dist.size
    share = (np.count_nonzero(dist < theta) + np.count_nonzero(dist <= theta)) / (2.0 * b)
    share = min(max(share, 0.5 / b), 1.0 - 0.5 / b)
    z0 = _NORMAL.inv_cdf(share)
    jack = _jackknife(data, func, statistic)
    u = (data.size - 1) * (np.mean(jack) - jack)
    den = float(np.sum(u ** 2)) ** 1.5
    accel = float(np.sum(u ** 3)) / (6.0 * den) if den > 0 else 0.0

    def adjusted(z_alpha: float) -> float:
        num = z0 + z_alpha
        return _NORMAL.cdf(z0 + num / (1.0 - accel * num))

    z_alpha = _NORMAL.inv_cdf(alpha)
    return adjusted(z_alpha), adjusted(-z_alpha)


def mean_interval(values: ArrayLike, level: float = 0.95,
                  method: Literal["bootstrap", "t"] = "bootstrap", **kw: Any
                  ) -> tuple[float, float]:
    """A confidence interval for a mean: a bootstrap one or Student's t.

    Args:
        values: The sample.
        level: Two-sided confidence level.
        method: ``"bootstrap"`` (:func:`bootstrap_interval` of the mean; ``kw`` goes to
            it: ``resamples``, ``seed``, ``method``) or ``"t"`` (:func:`t_interval`,
            which takes no further arguments).

    Returns:
        ``(low, high)``.

    Example:
        >>> [round(x, 4) for x in mean_interval([1.0, 2.0, 3.0, 4.0], method="t")]
        [0.4457, 4.5543]
    """
    if method == "bootstrap":
        return bootstrap_interval(values, "mean", level, **kw)
    if method == "t":
        if kw:
            raise ValueError(f"mean_interval(method='t') takes no {', '.join(sorted(kw))}")
        return t_interval(values, level)
    raise ValueError(f"method={method!r}: expected 'bootstrap' or 't'")


def paired_proportion_interval(b: int, c: int, n: int, level: float = 0.95
                               ) -> tuple[float, float]:
    """Tango's score interval for a difference of paired proportions.

    The difference is ``(c - b) / n``: the current pass rate minus the baseline one,
    where ``b`` rows passed in the baseline and fail now and ``c`` rows failed in the
    baseline and pass now (the concordant rows only enter through ``n``). The
    interval inverts Tango's (1998) score test, ``|c - b - n d| / sqrt(n (2 q(d) +
    d (1 - d)))`` <= z, with ``q(d)`` the maximum-likelihood probability of a "b" row
    under the difference ``d``; found by bisection. It stays informative at ``b = c
    = 0`` and inside [-1, 1], and has near-nominal coverage at small n (Newcombe 1998;
    Agresti & Min 2005).

    Args:
        b: Rows passed in the baseline and failed now.
        c: Rows failed in the baseline and passed now.
        n: All paired rows (``b + c <= n``); 0 gives ``(-1.0, 1.0)``.
        level: Two-sided confidence level.

    Returns:
        ``(low, high)`` within [-1, 1].

    Example:
        >>> [round(x, 4) for x in paired_proportion_interval(12, 2, 200)]
        [-0.0934, -0.0156]
    """
    b = _check_count(b, "b")
    c = _check_count(c, "c")
    n = _check_count(n, "n")
    level = _check_level(level)
    if b + c > n:
        raise ValueError(f"b + c = {b + c} is larger than n={n}")
    if n == 0:
        return (-1.0, 1.0)
    return _tango_interval(b, c, n, _z(level))


def _tango_statistic(b: int, c: int, n: int, d: float) -> float:
    """Tango's score statistic for the difference ``d`` of (c - b) / n; decreasing in d."""
    a2 = 2.0 * n
    bq = -float(b + c) + (2.0 * n - c + b) * d
    cq = -float(b) * d * (1.0 - d)
    q = (math.sqrt(max(bq * bq - 4.0 * a2 * cq, 0.0)) - bq) / (2.0 * a2)
    num = (c - b) - n * d
    var = n * (2.0 * q + d * (1.0 - d))
    if var <= 0.0:
        return 0.0 if num == 0 else math.copysign(math.inf, num)
    return num / math.sqrt(var)


def _tango_interval(b: int, c: int, n: int, z: float) -> tuple[float, float]:
    estimate = (c - b) / n

    def root(lo: float, hi: float, target: float) -> float:
        # _tango_statistic(lo) >= target >= _tango_statistic(hi); shrink to the crossing.
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if mid in (lo, hi):
                break
            if _tango_statistic(b, c, n, mid) > target:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    low = -1.0 if _tango_statistic(b, c, n, -1.0) <= z else root(-1.0, estimate, z)
    high = 1.0 if _tango_statistic(b, c, n, 1.0) >= -z else root(estimate, 1.0, -z)
    return (max(-1.0, low), min(1.0, high))


# -- tests -----------------------------------------------------------------------------------


def mcnemar_exact(b: int, c: int, alternative: Alternative = "two-sided", *,
                  mid_p: bool = False) -> float:
    """The exact McNemar test: a binomial test of ``b`` among the ``b + c`` discordant pairs.

    Under "no change" each discordant pair is equally likely to be a ``b`` (passed in
    the baseline, fails now) or a ``c`` (failed, passes now). The same p-value as
    ``scipy.stats.binomtest(b, b + c, 0.5, alternative=alternative).pvalue``, computed
    exactly (rational arithmetic up to 20,000 discordant pairs, a floating-point
    sum of the shorter tail above).

    Args:
        b: Pairs passed in the baseline and failed now.
        c: Pairs failed in the baseline and passed now.
        alternative: ``"greater"``: more pairs fail now than before (b > c), the
            regression direction; ``"less"``: the opposite; ``"two-sided"``: either.
        mid_p: The mid-p variant: the observed outcome counts half (``P(X > b) +
            P(X = b) / 2`` for ``"greater"``; two-sided, twice the smaller one-sided
            mid-p). Less conservative than the exact test, and its false-alarm rate
            stays close to, though not provably below, the nominal level (Fagerland,
            Lydersen & Laake 2013).

    Returns:
        The p-value; 1.0 when there is no discordant pair.

    Example:
        >>> mcnemar_exact(9, 1, "greater")
        0.0107421875
    """
    b = _check_count(b, "b")
    c = _check_count(c, "c")
    alternative = _check_alternative(alternative)
    n = b + c
    if n == 0:
        return 1.0
    half = 0.5 * _binom_half_pmf(b, n) if mid_p else 0.0
    if alternative == "greater":
        return _binom_half_cdf(n - b, n) - half          # P(X >= b) = P(X <= n - b)
    if alternative == "less":
        return _binom_half_cdf(b, n) - half
    if b == c:
        return 1.0
    return min(1.0, 2.0 * (_binom_half_cdf(min(b, c), n) - half))


def _rank_average(values: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Ranks (1-based, ties averaged) and the sizes of the tie groups."""
    import numpy as np

    order = np.argsort(values, kind="mergesort")
    inverse = np.empty(values.size, dtype=np.intp)
    inverse[order] = np.arange(values.size)
    ordered = values[order]
    starts = np.concatenate(([True], ordered[1:] != ordered[:-1]))
    group = np.cumsum(starts)[inverse]
    bounds = np.concatenate((np.flatnonzero(starts), [values.size]))
    ranks = 0.5 * (bounds[group] + bounds[group - 1] + 1)
    return ranks.astype(np.float64), np.diff(bounds).astype(np.float64)


def wilcoxon_signed_rank(diffs: ArrayLike, alternative: Alternative = "two-sided",
                         method: Literal["auto", "exact", "approx"] = "auto",
                         correction: bool = True) -> float:
    """The Wilcoxon signed-rank test that paired differences are symmetric about zero.

    Zero differences are dropped (Wilcoxon's treatment), the absolute differences
    ranked with ties averaged, and ``W+`` (the sum of the ranks of the positive
    differences) compared with its distribution under random signs:

    - ``"exact"``: the exact sign-flip distribution of ``W+`` given the ranks. Without
      ties this is the classical exact null distribution (``scipy.stats.wilcoxon(...,
      method="exact")``); with ties it is the exact permutation test on the tied
      ranks (``scipy.stats.wilcoxon(..., method=scipy.stats.PermutationMethod())``
      for small n).
    - ``"approx"``: the normal approximation with the tie correction of the variance
      and, when ``correction``, a continuity correction of 0.5
      (``scipy.stats.wilcoxon(..., method="asymptotic", correction=correction)``).
    - ``"auto"``: exact up to 50 non-zero differences, the approximation above.

    Args:
        diffs: Paired differences (e.g. current - baseline).
        alternative: ``"greater"``: the differences tend to be positive; ``"less"``:
            negative; ``"two-sided"``: either.
        method: ``"auto"``, ``"exact"`` or ``"approx"``.
        correction: Continuity correction of the normal approximation.

    Returns:
        The p-value; 1.0 when every difference is zero (or there is none).

    Example:
        >>> wilcoxon_signed_rank([-0.5, -0.2, -0.9, -0.1, 0.05, -0.3], "less")
        0.03125
    """
    import numpy as np

    data = _as_array(diffs, "diffs")
    alternative = _check_alternative(alternative)
    if method not in ("auto", "exact", "approx"):
        raise ValueError(f"method={method!r}: expected 'auto', 'exact' or 'approx'")
    data = data[data != 0.0]
    n = data.size
    if n == 0:
        return 1.0
    ranks, ties = _rank_average(np.abs(data))
    w_plus = float(np.sum(ranks[data > 0]))
    if method == "exact" or (method == "auto" and n <= _WILCOXON_EXACT_MAX_N):
        return _signed_rank_exact(ranks, w_plus, alternative)
    mean = n * (n + 1) / 4.0
    var = (n * (n + 1) * (2 * n + 1) - float(np.sum(ties ** 3 - ties)) / 2.0) / 24.0
    if var <= 0.0:
        return 1.0
    se = math.sqrt(var)
    z = (w_plus - mean) / se
    if correction:
        sign = 1.0 if alternative == "greater" else -1.0 if alternative == "less" else (
            math.copysign(1.0, z) if z != 0 else 0.0)
        z -= sign * 0.5 / se
    if alternative == "greater":
        return _normal_sf(z)
    if alternative == "less":
        return _normal_sf(-z)
    return min(1.0, 2.0 * _normal_sf(abs(z)))


def _signed_rank_exact(ranks: FloatArray, w_plus: float, alternative: str) -> float:
    """P-value of ``W+`` under independent random signs of the given (average) ranks."""
    import numpy as np

    doubled = np.rint(2.0 * ranks).astype(np.int64)  # average ranks are multiples of 1/2
    # prob[s]: probability that twice W+ equals s; each rank joins W+ with probability 1/2.
    prob = np.zeros(int(doubled.sum()) + 1)
    prob[0] = 1.0
    reach = 0
    for step in doubled.tolist():
        reach += step
        prob[step:reach + 1] = 0.5 * (prob[step:reach + 1] + prob[:reach + 1 - step])
        prob[:step] *= 0.5
    observed = round(2.0 * w_plus)
    p_greater = min(1.0, float(np.sum(prob[observed:])))
    p_less = min(1.0, float(np.sum(prob[: observed + 1])))
    if alternative == "greater":
        return p_greater
    if alternative == "less":
        return p_less
    return min(1.0, 2.0 * min(p_greater, p_less))


@dataclass(frozen=True)
class PairedDiff:
    """The mean paired difference ``current - baseline`` with its bootstrap interval.

    The p-values come from the same bootstrap distribution of the mean difference as
    the interval (the percentile method inverted): ``p_less = (1 + #{resampled mean >=
    0}) / (resamples + 1)`` is the evidence that current is lower than baseline,
    ``p_greater = (1 + #{resampled mean <= 0}) / (resamples + 1)`` that it is higher,
    and ``p_two_sided = min(1, 2 min(p_less, p_greater))``. ``p_less < alpha`` exactly
    when fewer than a fraction ``alpha`` of the resampled means reach 0, i.e. (up to
    the +1) when the one-sided ``1 - alpha`` percentile upper bound is below 0.
    """

    n: int
    mean_diff: float
    ci: tuple[float, float]
    level: float
    p_less: float
    p_greater: float
    p_two_sided: float
    resamples: int


def _paired_diffs(current: ArrayLike, baseline: ArrayLike) -> FloatArray:
    now = _as_array(current, "current")
    before = _as_array(baseline, "baseline")
    if now.size != before.size:
        raise ValueError(f"current has {now.size} values and baseline {before.size}: "
                         f"paired samples must have the same length")
    return now - before


def _paired_bootstrap(diffs: FloatArray, level: float, resamples: int, seed: int
                      ) -> tuple[PairedDiff, FloatArray]:
    import numpy as np

    n = int(diffs.size)
    if n == 0:
        raise ValueError("current, baseline: empty; a paired bootstrap needs at least "
                         "one pair")
    mean = float(np.mean(diffs))
    dist = _bootstrap_distribution(diffs, lambda a: np.mean(a, axis=-1), resamples, seed)
    alpha = (1.0 - level) / 2.0
    if dist.min() == dist.max():
        ci = (float(dist[0]), float(dist[0]))
    else:
        low, high = np.quantile(dist, [alpha, 1.0 - alpha])
        ci = (float(low), float(high))
    p_less = (1 + int(np.count_nonzero(dist >= 0.0))) / (resamples + 1)
    p_greater = (1 + int(np.count_nonzero(dist <= 0.0))) / (resamples + 1)
    result = PairedDiff(n=n, mean_diff=mean, ci=ci, level=level, p_less=p_less,
                        p_greater=p_greater,
                        p_two_sided=min(1.0, 2.0 * min(p_less, p_greater)),
                        resamples=resamples)
    return result, dist


def paired_bootstrap(current: ArrayLike, baseline: ArrayLike, level: float = 0.95,
                     resamples: int = 5000, seed: int = 0) -> PairedDiff:
    """The mean of ``current - baseline`` over pairs, with a paired bootstrap interval
    and bootstrap p-values.

    Pairs are resampled whole (rows with replacement), so the correlation between the
    two runs on the same row is kept. The interval is the percentile interval of the
    resampled mean differences; the p-values are described on :class:`PairedDiff`.

    Args:
        current: The current run's values, one per row.
        baseline: The baseline run's values for the same rows, in the same order.
        level: Two-sided confidence level of the interval.
        resamples: Bootstrap resamples.
        seed: Seed of ``numpy.random.default_rng``.

    Returns:
        A :class:`PairedDiff`.

    Example:
        >>> d = paired_bootstrap([0.5, 0.6, 0.4, 0.7], [0.7, 0.8, 0.6, 0.8])
        >>> round(d.mean_diff, 3), d.p_less < 0.01
        (-0.175, True)
    """
    diffs = _paired_diffs(current, baseline)
    level = _check_level(level)
    resamples = _check_resamples(resamples)
    seed = _check_seed(seed)
    return _paired_bootstrap(diffs, level, resamples, seed)[0]


# -- the regression decision -----------------------------------------------------------------


@dataclass(frozen=True)
class RegressionTest:
    """The outcome of :func:`regression_test`: did the current run get worse?

    Attributes:
        kind: ``"binary"`` (pass/fail verdicts) or ``"numeric"`` (scores).
        method: The test behind ``p_value``: ``"mcnemar-exact"``, ``"mcnemar-mid-p"``,
            ``"wilcoxon-signed-rank"`` or ``"paired-bootstrap"``.
        interval_method: How ``ci`` and ``bound`` were computed: ``"tango-score"``
            (binary) or ``"bootstrap-percentile"`` (numeric).
        n: Complete pairs compared.
        dropped: Pairs left out because either side was None (or NaN).
        baseline_value: Baseline pass rate (binary) or mean score (numeric).
        current_value: Current pass rate or mean score.
        diff: ``current_value - baseline_value``.
        ci: Two-sided ``level`` confidence interval of ``diff``.
        level: The confidence level of ``ci``.
        p_value: One-sided p-value of "no change" against "worse".
        alpha: The significance level.
        significant: ``p_value < alpha``.
        tolerance: How large a worsening is allowed (units of ``diff``).
        bound: The one-sided ``1 - alpha`` confidence bound of ``diff`` on the better
            side: the upper bound when higher is better (the drop is at least
            ``-bound`` with confidence ``1 - alpha``), the lower bound otherwise.
        regression: A significant worsening larger than ``tolerance`` (see
            :func:`regression_test`).
        higher_is_better: Direction of "better".
        newly_failing: Binary only: rows better in the baseline and worse now (passed,
            now fail; with ``higher_is_better=False``, False then and True now).
        newly_passing: Binary only: rows worse in the baseline and better now.
    """

    kind: str
    method: str
    interval_method: str
    n: int
    dropped: int
    baseline_value: float
    current_value: float
    diff: float
    ci: tuple[float, float]
    level: float
    p_value: float
    alpha: float
    significant: bool
    tolerance: float
    bound: float
    regression: bool
    higher_is_better: bool
    newly_failing: int | None = None
    newly_passing: int | None = None

    def summary(self) -> str:
        """One line for a CI log.

        Example:
            ``pass rate 1.000 -> 0.900 (diff -0.100, 95% CI [-0.149, -0.066]; 200
            pairs); 20 newly failing, 0 newly passing; mcnemar-exact p=9.5e-07 < 0.05:
            regression``
        """
        if self.n == 0:
            return f"no complete pairs ({self.dropped} dropped): nothing to compare"
        what = "pass rate" if self.kind == "binary" else "mean"
        text = (f"{what} {self.baseline_value:.3f} -> {self.current_value:.3f} (diff "
                f"{self.diff:+.3f}, {self.level:.0%} CI [{self.ci[0]:+.3f}, "
                f"{self.ci[1]:+.3f}]; {self.n} pairs)")
        if self.newly_failing is not None:
            text += f"; {self.newly_failing} newly failing, {self.newly_passing} newly passing"
        compare = "<" if self.significant else ">="
        text += f"; {self.method} p={self.p_value:.2g} {compare} {self.alpha:g}"
        if self.regression:
            return text + ": regression"
        if self.significant:
            return text + f": worse, but not beyond the tolerance {self.tolerance:g}"
        return text + ": no significant change"


def _pairs(current: Sequence[Any], baseline: Sequence[Any], kind: str
           ) -> tuple[list[float], list[float], int]:
    """The complete pairs as floats, and how many pairs had a missing side."""
    if isinstance(current, (str, bytes)) or isinstance(baseline, (str, bytes)):
        raise ValueError("current, baseline: expected sequences of values, got a string")
    now_values, before_values = list(current), list(baseline)
    if len(now_values) != len(before_values):
        raise ValueError(f"current has {len(now_values)} values and baseline "
                         f"{len(before_values)}: paired samples must have the same length")

    import numpy as np

    plain = (bool, int, float, np.bool_, np.float64, np.int64)
    binary = kind == "binary"

    def convert(value: Any, name: str, i: int) -> float | None:
        if value is None:
            return None
        if type(value) in plain or isinstance(value, (numbers.Real, np.bool_)):
            number = float(value)
        else:
            binary_or_not = "bool (or 0/1)" if binary else "numbers"
            raise ValueError(f"{name}[{i}] is {value!r}: {kind} values must be "
                             f"{binary_or_not}, or None when missing")
        if binary:
            if number != 0.0 and number != 1.0:
                raise ValueError(f"{name}[{i}] is {value!r}: binary values must be bool "
                                 f"(or 0/1), or None when missing")
            return number
        if number != number:          # NaN: missing
            return None
        if math.isinf(number):
            raise ValueError(f"{name}[{i}] is {value!r}: expected a finite number")
        return number

    now_out: list[float] = []
    before_out: list[float] = []
    dropped = 0
    for i, (now, before) in enumerate(zip(now_values, before_values, strict=True)):
        x = convert(now, "current", i)
        y = convert(before, "baseline", i)
        if x is None or y is None:
            dropped += 1
            continue
        now_out.append(x)
        before_out.append(y)
    return now_out, before_out, dropped


def regression_test(current: Sequence[Any], baseline: Sequence[Any], *,
                    kind: str, alpha: float = 0.05,
                    tolerance: float = 0.0, level: float = 0.95,
                    higher_is_better: bool = True, seed: int = 0,
                    method: str = "auto",
                    resamples: int = 5000) -> RegressionTest:
    """Decide whether ``current`` is a regression from ``baseline`` or judge noise.

    The two runs are paired by position (the same data set row). A pair with a None
    (or, for numbers, NaN) on either side is dropped and counted in ``dropped``.

    **Binary** (pass/fail verdicts): ``p_value`` is the one-sided mid-p McNemar test
    (:func:`mcnemar_exact` with ``mid_p=True``; alternative "the current run fails
    more often"), which uses only the rows whose verdict changed. The mid-p test is
    the default (``"auto"``) because the exact conditional test is conservative: with
    the few changed rows of a typical gate its real false-alarm rate is well below
    ``alpha``, and it misses drops the mid-p test finds (simulated, 200 rows, judge
    flip rate 0.02, a 5-point drop: detected 83-87% against 76-78%, with false alarms
    of 3.7-4.4% against 2.0-2.2% at alpha 0.05; tests/evaluate/test_gate_soundness.py).
    ``method="exact"`` takes the exact test, whose false-alarm rate is at most
    ``alpha`` at any size. ``diff`` is the
    difference of pass rates with Tango's score interval
    (:func:`paired_proportion_interval`).

    **Numeric** (scores): ``method="wilcoxon"`` (the default, ``"auto"``) gives the
    one-sided Wilcoxon signed-rank p-value of the differences (:func:`wilcoxon_signed_rank`);
    when the runs differ only by judge noise each difference is symmetric about zero,
    which is exactly what the test assumes, so its false-alarm rate holds whatever the
    score distribution (discrete scales with ties included). ``method="bootstrap"``
    uses the paired-bootstrap p-value of the mean difference instead
    (:func:`paired_bootstrap`): asymptotic, with a false-alarm rate close to ``alpha``
    but not guaranteed below it (5.0-5.4% at ``alpha`` = 0.05 in simulations of 4,000
    no-change comparisons of 200 rows). Either way
    ``diff`` is the mean difference with a paired-bootstrap percentile interval.

    **The decision**: ``significant`` is ``p_value < alpha``; ``regression`` requires

    1. ``significant``, and
    2. ``diff`` in the worse direction, and
    3. with ``tolerance > 0``: ``bound``, the one-sided ``1 - alpha`` confidence bound
       on the better side, beyond the tolerance (``bound < -tolerance`` when higher is
       better). By the duality of intervals and tests this rejects the shifted null
       "worse by at most ``tolerance``" at level ``alpha``: Tango's score test for
       binary, the percentile bootstrap of the mean difference for numeric. Both are
       asymptotic; simulated on 200 rows at a true drop equal to the tolerance
       (``bench/gate.py``) they fire 3.4% (binary) and 5.3% (numeric) of the time at
       ``alpha`` = 0.05.

    Requiring all the conditions can only lower the false-alarm rate of each.

    Args:
        current: The current run's values, one per row (bool for binary, numbers for
            numeric, None where missing).
        baseline: The baseline run's values for the same rows, in the same order.
        kind: ``"binary"`` or ``"numeric"``.
        alpha: Significance level of the one-sided test.
        tolerance: A worsening no larger than this is not a regression (pass-rate
            fraction for binary, e.g. 0.02 for 2 points; score units for numeric).
        level: Confidence level of the reported ``ci``.
        higher_is_better: False when a higher value is worse (for binary: True is the
            bad outcome, e.g. "hallucinated").
        seed: Seed of the bootstrap (numeric).
        method: ``"auto"``: ``"mid-p"`` for binary, ``"wilcoxon"`` for numeric;
            binary also takes ``"exact"``, numeric ``"bootstrap"``.
        resamples: Bootstrap resamples (numeric).

    Returns:
        A :class:`RegressionTest`. With no complete pair, ``n`` is 0, the values,
        ``diff``, ``ci`` and ``bound`` are nan, ``p_value`` is 1.0 and nothing is
        significant.

    Example:
        >>> t = regression_test([True] * 180 + [False] * 20, [True] * 200, kind="binary")
        >>> t.diff, t.newly_failing, t.p_value < 0.05, t.regression
        (-0.1, 20, True, True)
    """
    import numpy as np

    if kind not in ("binary", "numeric"):
        raise ValueError(f"kind={kind!r}: expected 'binary' or 'numeric'")
    alpha = _check_level(alpha, "alpha")
    level = _check_level(level)
    if (isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real)
            or not math.isfinite(tolerance) or tolerance < 0):
        raise ValueError(f"tolerance={tolerance!r}: expected a finite number >= 0")
    tolerance = float(tolerance)
    seed = _check_seed(seed)
    resamples = _check_resamples(resamples)
    methods = ("auto", "exact", "mid-p") if kind == "binary" else (
        "auto", "wilcoxon", "bootstrap")
    if method not in methods:
        raise ValueError(f"method={method!r}: for kind={kind!r} expected one of "
                         f"{', '.join(repr(m) for m in methods)}")
    higher_is_better = bool(higher_is_better)
    now_list, before_list, dropped = _pairs(current, baseline, kind)
    now = np.asarray(now_list, dtype=np.float64)
    before = np.asarray(before_list, dtype=np.float64)
    n = int(now.size)
    sign = 1.0 if higher_is_better else -1.0       # sign * diff < 0 means worse

    if kind == "binary":
        test_name = "mcnemar-exact" if method == "exact" else "mcnemar-mid-p"
        interval_name = "tango-score"
    elif method == "bootstrap":
        test_name, interval_name = "paired-bootstrap", "bootstrap-percentile"
    else:
        test_name, interval_name = "wilcoxon-signed-rank", "bootstrap-percentile"

    def result(baseline_value: float, current_value: float, diff: float,
               ci: tuple[float, float], p_value: float, bound: float, regression: bool,
               counts: tuple[int, int] | None) -> RegressionTest:
        return RegressionTest(
            kind=kind, method=test_name, interval_method=interval_name, n=n, dropped=dropped,
            baseline_value=baseline_value, current_value=current_value, diff=diff, ci=ci,
            level=level, p_value=p_value, alpha=alpha, significant=p_value < alpha,
            tolerance=tolerance, bound=bound, regression=regression,
            higher_is_better=higher_is_better,
            newly_failing=None if counts is None else counts[0],
            newly_passing=None if counts is None else counts[1])

    if n == 0:
        nan = math.nan
        return result(nan, nan, nan, (nan, nan), 1.0, nan, False,
                      (0, 0) if kind == "binary" else None)

    baseline_value = float(np.mean(before))
    current_value = float(np.mean(now))
    counts: tuple[int, int] | None = None
    if kind == "binary":
        b = int(np.count_nonzero((before == 1.0) & (now == 0.0)))   # passed, now fails
        c = int(np.count_nonzero((before == 0.0) & (now == 1.0)))   # failed, now passes
        diff = (c - b) / n
        worse, better = (b, c) if higher_is_better else (c, b)
        p_value = mcnemar_exact(worse, better, "greater", mid_p=method != "exact")
        ci = _tango_interval(b, c, n, _z(level))
        one_sided = _tango_interval(b, c, n, _NORMAL.inv_cdf(1.0 - alpha))
        counts = (worse, better)
    else:
        diffs = now - before
        paired, dist = _paired_bootstrap(diffs, level, resamples, seed)
        diff, ci = paired.mean_diff, paired.ci
        if test_name == "paired-bootstrap":
            p_value = paired.p_less if higher_is_better else paired.p_greater
        else:
            p_value = wilcoxon_signed_rank(diffs, "less" if higher_is_better else "greater")
        low, high = np.quantile(dist, [alpha, 1.0 - alpha])
        one_sided = (float(low), float(high))
    bound = one_sided[1] if higher_is_better else one_sided[0]
    worse_by = -sign * diff
    beyond = tolerance == 0.0 or -sign * bound > tolerance
    regression = p_value < alpha and worse_by > 0 and beyond
    return result(baseline_value, current_value, diff, ci, p_value, bound, regression, counts)
