"""Confidence intervals over seeds, arm-against-arm tests, verdicts on papers' claims, and a
convergence check: the statistics of a study's table.

A table cell that averages seeds is a `mean_interval`: the mean and its 95% interval, Student's
t over the seeds by default (a percentile bootstrap as an option). A declared comparison of two
arms is a `compare`: the difference of their means with its interval and a p-value, by Welch's
t-test for independent seeds (Welch 1947, scipy.stats.ttest_ind(equal_var=False)) or a paired
t-test when the arms share their seeds (scipy.stats.ttest_rel); method="bootstrap" gives a
bootstrap interval (scipy.stats.bootstrap) and a permutation-test p-value
(scipy.stats.permutation_test) instead. `verdict` turns a comparison and a paper's stated
direction (and optionally size) into `reproduces`, `contradicts` or `inconclusive`, by a fixed
rule on the interval (see its docstring). `convergence` says whether a validation curve still
moved, over the last 20% of training, by more than the final interval's half-width.

Every result is a plain dataclass with `to_dict()` for JSON (nan becomes None). With one seed
there is no interval: its bounds are nan and every verdict on it is `inconclusive`. With zero
variance over the seeds the t interval has zero width (the formula's value, not a guess).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import warnings
from collections.abc import Mapping, Sequence

import numpy as np

LEVEL = 0.95
METHODS = ("t", "bootstrap")
DIRECTIONS = ("lower", "higher", "same")
REPRODUCES, CONTRADICTS, INCONCLUSIVE = "reproduces", "contradicts", "inconclusive"
TAIL = 0.2  # the last fifth of training, for `convergence`


def json_safe(value):
  """A JSON-safe copy: numpy scalars and arrays to Python, nan/inf to None, containers
  recursively, objects with a to_dict() (this module's and cnn_jax.scaling's results) by it."""
  if hasattr(value, "to_dict") and not isinstance(value, type):
    return value.to_dict()
  if isinstance(value, np.ndarray):
    value = value.tolist()
  if isinstance(value, Mapping):
    return {k: json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  if isinstance(value, (np.generic, float)):
    value = value.item() if isinstance(value, np.generic) else value
    return None if isinstance(value, float) and not math.isfinite(value) else value
  return value


@dataclasses.dataclass(frozen=True)
class Interval:
  """The mean of `n` values and its two-sided `level` confidence interval [low, high].

  std is the sample standard deviation (ddof=1; nan with n < 2), method "t" or "bootstrap".
  """
  mean: float
  low: float
  high: float
  n: int
  std: float
  level: float = LEVEL
  method: str = "t"

  @property
  def half_width(self) -> float:
    """Half the interval's width (nan where there is no interval)."""
    return (self.high - self.low) / 2

  def contains(self, x: float) -> bool:
    """Whether x lies in [low, high]; False where there is no interval."""
    return bool(self.low <= x <= self.high)

  def to_dict(self) -> dict:
    return json_safe({**dataclasses.asdict(self), "half_width": self.half_width})


def _values(values) -> np.ndarray:
  array = np.asarray(list(values.values()) if isinstance(values, Mapping) else values, float)
  if array.ndim != 1 or not array.size:
    raise ValueError(f"need a non-empty 1-D sequence of values, got shape {array.shape}")
  if not np.all(np.isfinite(array)):
    raise ValueError(f"values must be finite, got {array.tolist()}")
  return array


def _check(level: float, method: str):
  if not 0 < level < 1:
    raise ValueError(f"level must lie in (0, 1), got {level}")
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def _rng(function, seed) -> dict:
  """The seeded-generator keyword of a scipy.stats resampling function: `rng` from scipy 1.15,
  `random_state` before it (pyproject admits scipy 1.11)."""
  key = "rng" if "rng" in inspect.signature(function).parameters else "random_state"
  return {key: np.random.default_rng(seed)}


def mean_interval(values, level: float = LEVEL, method: str = "t", n_resamples: int = 9999,
                  seed: int = 0) -> Interval:
  """The mean of `values` (one per seed; a sequence or {seed: value}) and its interval.

  method="t": mean ± t.ppf((1 + level) / 2, n - 1) * s / sqrt(n), Student's t interval with s
  the sample standard deviation. method="bootstrap": the percentile interval of the mean over
  `n_resamples` resamples of the seeds (scipy.stats.bootstrap, RNG seeded by `seed`); with few
  seeds it is narrower than the t interval (2 seeds give at most 3 distinct means), so t is the
  default. n = 1 gives nan bounds; zero variance a zero-width interval.
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top
  _check(level, method)
  x = _values(values)
  n, mean = len(x), float(x.mean())
  std = float(x.std(ddof=1)) if n > 1 else math.nan
  if np.ptp(x) == 0:  # exactly, not up to the rounding of the mean
    mean, std = float(x[0]), (0.0 if n > 1 else math.nan)
  if n < 2:
    return Interval(mean, math.nan, math.nan, n, std, level, method)
  if method == "t" or std == 0:
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, std, level, method)
  ci = stats.bootstrap((x,), np.mean, confidence_level=level, n_resamples=n_resamples,
                       method="percentile", **_rng(stats.bootstrap, seed)).confidence_interval
  return Interval(mean, float(ci.low), float(ci.high), n, std, level, method)


def format_interval(interval: Interval, digits: int = 2) -> str:
  """A table cell: '14.00 [7.52, 20.48]', or the bare mean where there is no interval."""
  if not math.isfinite(interval.low):
    return f"{interval.mean:.{digits}f}"
  return f"{interval.mean:.{digits}f} [{interval.low:.{digits}f}, {interval.high:.{digits}f}]"


@dataclasses.dataclass(frozen=True)
class Comparison:
  """Arm `a` against arm `b`: diff = mean(a) - mean(b) with its `level` interval [low, high]
  and a two-sided p-value for no difference.

  test is "welch" (independent seeds; Welch 1947), "paired_t" (the same seeds in both arms),
  "permutation" or "paired_permutation" (method="bootstrap": the interval is a bootstrap one).
  """
  a: str
  b: str
  mean_a: float
  mean_b: float
  diff: float
  low: float
  high: float
  pvalue: float
  n_a: int
  n_b: int
  paired: bool
  test: str
  level: float = LEVEL

  @property
  def half_width(self) -> float:
    return (self.high - self.low) / 2

  def to_dict(self) -> dict:
    return json_safe({**dataclasses.asdict(self), "half_width": self.half_width})


def _pair(a, b, paired):
  """(a values, b values, paired): both {seed: value} mappings with the same seeds are paired
  when `paired` is None (seed k of a against seed k of b); sequences are then independent."""
  if paired is None:
    paired = (isinstance(a, Mapping) and isinstance(b, Mapping) and set(a) == set(b)
              and len(a) > 1)
  if paired and isinstance(a, Mapping) and isinstance(b, Mapping):
    if set(a) != set(b):
      raise ValueError(f"a paired comparison needs the same seeds in both arms, got "
                       f"{sorted(a)} and {sorted(b)}")
    seeds = sorted(a)
    return _values([a[s] for s in seeds]), _values([b[s] for s in seeds]), True
  x, y = _values(a), _values(b)
  if paired and len(x) != len(y):
    raise ValueError(f"a paired comparison needs as many values in each arm, got {len(x)} "
                     f"and {len(y)}")
  return x, y, bool(paired)


def _mean_diff(x, y, axis=-1):
  return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def compare(a, b, names: tuple[str, str] = ("a", "b"), paired: bool | None = None,
            level: float = LEVEL, method: str = "t", n_resamples: int = 9999,
            seed: int = 0) -> Comparison:
  """mean(a) - mean(b) over seeds, its interval and a p-value.

  a and b hold one value per seed: sequences, or {seed: value} mappings. paired=None pairs them
  when both are mappings over the same seeds (two or more), else treats them as independent.
  method="t": independent arms by Welch's t-test (scipy.stats.ttest_ind, equal_var=False; the
  interval diff ± t * sqrt(s_a²/n_a + s_b²/n_b) on Welch-Satterthwaite degrees of freedom),
  paired arms by the paired t-test (scipy.stats.ttest_rel, the t interval of the differences).
  method="bootstrap": the percentile interval over `n_resamples` resamples (scipy.stats.
  bootstrap; seeds resampled within each arm, or jointly when paired) and the p-value of a
  permutation test (scipy.stats.permutation_test; labels swapped within a seed when paired).
  A side with one seed gives nan bounds and p-value. No variance (both arms constant, or
  constant paired differences) gives the zero-width interval [diff, diff] and, for the t-tests,
  p = 0 for a nonzero difference (the limit scipy also reaches) and p = 1 for none.
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top
  _check(level, method)
  x, y, paired = _pair(a, b, paired)
  diff = float(x.mean() - y.mean())
  low = high = pvalue = math.nan
  if paired:
    test = "paired_t" if method == "t" else "paired_permutation"
  else:
    test = "welch" if method == "t" else "permutation"
  if min(len(x), len(y)) > 1:
    spread = np.ptp(x - y) if paired else max(np.ptp(x), np.ptp(y))
    with warnings.catch_warnings():  # scipy warns on nearly identical values
      warnings.simplefilter("ignore", RuntimeWarning)
      if spread == 0:  # no variance: the difference is exact; t's limit is p = 0 (or 1 at 0)
        low = high = diff
        pvalue = float(diff == 0)
      elif method == "t":
        result = stats.ttest_rel(x, y) if paired else stats.ttest_ind(x, y, equal_var=False)
        ci = result.confidence_interval(level)
        low, high, pvalue = float(ci.low), float(ci.high), float(result.pvalue)
      else:
        ci = stats.bootstrap((x, y), _mean_diff, paired=paired, vectorized=True,
                             confidence_level=level, n_resamples=n_resamples,
                             method="percentile",
                             **_rng(stats.bootstrap, seed)).confidence_interval
        low, high = float(ci.low), float(ci.high)
      if method == "bootstrap":
        pvalue = float(stats.permutation_test(
            (x, y), _mean_diff, permutation_type="samples" if paired else "independent",
            vectorized=True, n_resamples=n_resamples,
            **_rng(stats.permutation_test, seed)).pvalue)
  return Comparison(names[0], names[1], float(x.mean()), float(y.mean()), diff, low, high,
                    pvalue, len(x), len(y), paired, test, level)


@dataclasses.dataclass(frozen=True)
class Verdict:
  """A paper's claim about arms a and b checked against a `Comparison`.

  effect is the difference in the claim's direction (b - a for "lower", a - b for "higher",
  a - b for "same") with its interval [low, high]; size the claimed effect (for "same", the
  margin); size_in_interval whether the claimed size lies inside the interval; claim the claim
  in words; verdict "reproduces", "contradicts" or "inconclusive" (see `verdict`).
  """
  verdict: str
  claim: str
  direction: str
  size: float | None
  effect: float
  low: float
  high: float
  size_in_interval: bool | None
  pvalue: float

  def to_dict(self) -> dict:
    return json_safe(dataclasses.asdict(self))


def verdict(comparison: Comparison, direction: str, size: float | None = None) -> Verdict:
  """The verdict of the data on a paper's claim "a's metric is `direction` than b's [by about
  `size`]", computed from the comparison's interval. The metric is whatever was compared (an
  error, so "lower" is better).

  Let [L, H] be the interval of the effect in the claim's direction: (b - a) for "lower",
  (a - b) for "higher". Then, with no size:
    reproduces    if L > 0   (the whole interval lies on the claimed side of zero);
    contradicts   if H < 0   (the whole interval lies on the other side);
    inconclusive  otherwise  (the interval contains zero).
  With a size s > 0 (the claimed effect, in the metric's units):
    contradicts   if H < s   (the data exclude an effect as large as claimed: the other
                              direction, no effect, or a smaller one);
    reproduces    if L > 0 and H >= s (the direction is established and an effect at least as
                              large as claimed is consistent with it; a larger effect than
                              claimed also reproduces, and `size_in_interval` says whether s
                              itself lies in [L, H]);
    inconclusive  otherwise  (L <= 0 <= s <= H: neither zero nor the claim is excluded).
  direction="same" (the paper claims no difference) needs size = the margin m > 0 within which
  a difference counts as none (an equivalence test): with [L, H] the interval of a - b,
    reproduces if -m <= L and H <= m; contradicts if L > m or H < -m; inconclusive otherwise.
  No interval (a side with one seed: nan bounds) is always inconclusive.
  """
  if direction not in DIRECTIONS:
    raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
  if size is not None and not size > 0:
    raise ValueError(f"size must be positive (the claimed effect or margin), got {size}")
  if direction == "same" and size is None:
    raise ValueError('direction="same" needs size: the margin within which a difference is none')
  c = comparison
  if direction == "lower":
    effect, low, high = -c.diff, -c.high, -c.low
    claim = f"{c.a} lower than {c.b}"
  else:
    effect, low, high = c.diff, c.low, c.high
    claim = f"{c.a} {'higher than' if direction == 'higher' else 'the same as'} {c.b}"
  if size is not None:
    claim += f" (within ±{size:g})" if direction == "same" else f" by about {size:g}"
  finite = math.isfinite(low) and math.isfinite(high)
  if not finite:
    result = INCONCLUSIVE
  elif direction == "same":
    result = (REPRODUCES if -size <= low and high <= size
              else CONTRADICTS if low > size or high < -size else INCONCLUSIVE)
  elif size is None:
    result = REPRODUCES if low > 0 else CONTRADICTS if high < 0 else INCONCLUSIVE
  else:
    result = CONTRADICTS if high < size else REPRODUCES if low > 0 else INCONCLUSIVE
  inside = None if size is None or not finite else bool(low <= size <= high)
  return Verdict(result, claim, direction, size, effect, low, high, inside, c.pvalue)


@dataclasses.dataclass(frozen=True)
class Convergence:
  """How much a validation curve moved over the last `tail` of training.

  change = value at the last step - value at from_step (interpolated linearly between logged
  points), from_step = last step - tail * (last step - start); converged whether |change| is
  smaller than half_width, the final interval's half-width (False where that is nan).
  """
  change: float
  converged: bool
  half_width: float
  from_step: float
  to_step: float

  def to_dict(self) -> dict:
    return json_safe(dataclasses.asdict(self))


def convergence(steps: Sequence[float], values: Sequence[float], half_width: float,
                tail: float = TAIL, start: float = 0.0) -> Convergence:
  """Whether a validation-error curve had settled: its change over the last `tail` (20%) of
  training against the final interval's half-width (e.g. `mean_interval(...).half_width`).

  steps are the curve's training steps (or epochs), ascending, training starting at `start`;
  where the window begins before the first logged point the change is measured from that
  point. Fewer than two points give change nan and converged False.
  """
  if not 0 < tail <= 1:
    raise ValueError(f"tail must lie in (0, 1], got {tail}")
  s, v = np.asarray(steps, float), np.asarray(values, float)
  if s.shape != v.shape or s.ndim != 1:
    raise ValueError(f"steps and values must be 1-D of one length, got {s.shape}, {v.shape}")
  if np.any(np.diff(s) <= 0):
    raise ValueError("steps must be strictly ascending")
  if len(s) < 2:
    last = float(s[-1]) if len(s) else math.nan
    return Convergence(math.nan, False, float(half_width), last, last)
  from_step = max(float(s[-1] - tail * (s[-1] - start)), float(s[0]))
  change = float(v[-1] - np.interp(from_step, s, v))
  converged = bool(math.isfinite(half_width) and abs(change) < half_width)
  return Convergence(change, converged, float(half_width), from_step, float(s[-1]))
