"""Intervals over seeds, arm comparisons, verdicts and the convergence check, against scipy on
fixed numbers."""

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from cnn_jax import stats

BASE = [10.0, 11.0, 12.0]  # arm a's errors over three seeds: mean 11, sample std 1


def test_t_interval_of_fixed_numbers():
  iv = stats.mean_interval([1, 2, 3, 4])
  s = np.std([1, 2, 3, 4], ddof=1)
  half = sps.t.ppf(0.975, 3) * s / math.sqrt(4)
  assert iv.mean == 2.5 and iv.n == 4 and iv.std == pytest.approx(s)
  assert (iv.low, iv.high) == pytest.approx((2.5 - half, 2.5 + half), rel=1e-12)
  assert iv.half_width == pytest.approx(half)
  assert iv.contains(2.5) and not iv.contains(2.5 + 1.01 * half)
  assert stats.mean_interval({7: 1, 3: 2, 5: 3, 1: 4}) == iv  # {seed: value} as well


def test_interval_level_and_bootstrap_match_scipy():
  values = [0.31, 0.29, 0.35, 0.30, 0.33]
  iv90 = stats.mean_interval(values, level=0.9)
  assert iv90.half_width == pytest.approx(
      sps.t.ppf(0.95, 4) * np.std(values, ddof=1) / math.sqrt(5))
  assert iv90.half_width < stats.mean_interval(values).half_width
  boot = stats.mean_interval(values, method="bootstrap", n_resamples=2000, seed=3)
  ref = sps.bootstrap((np.array(values),), np.mean, n_resamples=2000, method="percentile",
                      rng=np.random.default_rng(3)).confidence_interval
  assert (boot.low, boot.high) == pytest.approx((ref.low, ref.high))
  assert boot.method == "bootstrap" and boot.low < boot.mean < boot.high


def test_one_seed_has_no_interval_and_zero_variance_a_point():
  one = stats.mean_interval([0.2])
  assert one.mean == 0.2 and math.isnan(one.low) and math.isnan(one.high)
  assert math.isnan(one.std) and not one.contains(0.2)
  assert stats.format_interval(one) == "0.20"
  assert json.loads(json.dumps(one.to_dict()))["low"] is None  # nan -> null in JSON
  flat = stats.mean_interval([0.2, 0.2, 0.2])
  assert (flat.low, flat.high) == (0.2, 0.2)
  assert stats.format_interval(stats.mean_interval([1, 2, 3, 4]), 1) == "2.5 [0.4, 4.6]"


def test_welch_matches_scipy_and_the_welch_satterthwaite_interval():
  a, b = [1.0, 2.0, 3.0, 4.5], [2.0, 4.0, 7.0]
  c = stats.compare(a, b, names=("lrn", "none"))
  ref = sps.ttest_ind(a, b, equal_var=False)
  assert c.test == "welch" and not c.paired and (c.a, c.b) == ("lrn", "none")
  assert c.pvalue == pytest.approx(ref.pvalue, rel=1e-12)
  va, vb = np.var(a, ddof=1) / 4, np.var(b, ddof=1) / 3
  df = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2)  # Welch (1947)
  half = sps.t.ppf(0.975, df) * math.sqrt(va + vb)
  assert c.diff == pytest.approx(np.mean(a) - np.mean(b))
  assert (c.low, c.high) == pytest.approx((c.diff - half, c.diff + half), rel=1e-10)


def test_shared_seeds_pair_and_match_ttest_rel():
  a, b = {0: 1.0, 1: 2.0, 2: 3.5}, {2: 7.0, 0: 2.0, 1: 4.0}  # matched by seed, not by order
  c = stats.compare(a, b)
  assert c.paired and c.test == "paired_t"
  assert c.pvalue == pytest.approx(sps.ttest_rel([1, 2, 3.5], [2, 4, 7]).pvalue, rel=1e-12)
  diffs = stats.mean_interval([-1.0, -2.0, -3.5])
  assert (c.low, c.high) == pytest.approx((diffs.low, diffs.high))
  assert not stats.compare(a, b, paired=False).paired
  assert not stats.compare({0: 1.0, 1: 2.0}, {1: 2.0, 2: 3.0}).paired  # other seeds: Welch
  with pytest.raises(ValueError, match="same seeds"):
    stats.compare({0: 1.0, 1: 2.0}, {1: 2.0, 2: 3.0}, paired=True)


def test_bootstrap_comparison_uses_a_permutation_p_value():
  a, b = [1.0, 2.0, 3.0, 2.5], [2.0, 4.0, 7.0, 5.0]
  c = stats.compare(a, b, method="bootstrap", n_resamples=999, seed=1)
  ref = sps.permutation_test((np.array(a), np.array(b)),
                             lambda x, y, axis: x.mean(axis) - y.mean(axis),
                             permutation_type="independent", vectorized=True, n_resamples=999,
                             rng=np.random.default_rng(1))
  assert c.test == "permutation" and c.pvalue == pytest.approx(ref.pvalue)
  assert c.low < c.diff < c.high < 0
  paired = stats.compare(dict(enumerate(a)), dict(enumerate(b)), method="bootstrap")
  assert paired.test == "paired_permutation" and paired.low <= paired.diff <= paired.high


def test_degenerate_comparisons():
  single = stats.compare([1.0], [2.0, 3.0])
  assert math.isnan(single.low) and math.isnan(single.pvalue)
  assert stats.verdict(single, "lower").verdict == stats.INCONCLUSIVE
  apart = stats.compare([1.0, 1.0], [2.0, 2.0])
  assert (apart.low, apart.high, apart.pvalue) == (-1.0, -1.0, 0.0)
  same = stats.compare([1.0, 1.0], [1.0, 1.0])
  assert (same.low, same.high, same.pvalue) == (0.0, 0.0, 1.0)


def _claim(shift, direction="lower", size=None):
  """The verdict on "a's error is `direction` than b's", b = a + shift (Welch, 3 seeds each:
  the interval of b - a is shift ± t(0.975, 4) sqrt(2/3) = shift ± 2.27)."""
  c = stats.compare(BASE, [v + shift for v in BASE])
  return stats.verdict(c, direction, size)


def test_verdict_flips_with_where_the_interval_lies():
  half = sps.t.ppf(0.975, 4) * math.sqrt(2 / 3)
  yes, unsure, no = _claim(3.0), _claim(0.5), _claim(-3.0)
  assert yes.low == pytest.approx(3.0 - half) and yes.low > 0
  assert yes.verdict == stats.REPRODUCES and yes.effect == pytest.approx(3.0)
  assert unsure.low < 0 < unsure.high and unsure.verdict == stats.INCONCLUSIVE
  assert no.high < 0 and no.verdict == stats.CONTRADICTS
  assert _claim(3.0, "higher").verdict == stats.CONTRADICTS  # the other claim, mirrored
  assert _claim(-3.0, "higher").verdict == stats.REPRODUCES
  assert json.loads(json.dumps(yes.to_dict()))["verdict"] == "reproduces"


def test_verdict_with_a_claimed_size():
  # b - a in [0.73, 5.27] (shift 3) and [-1.77, 2.77] (shift 0.5).
  matched = _claim(3.0, size=1.4)
  assert matched.verdict == stats.REPRODUCES and matched.size_in_interval
  bigger = _claim(3.0, size=0.5)  # a larger effect than claimed still reproduces the claim
  assert bigger.verdict == stats.REPRODUCES and bigger.size_in_interval is False
  assert _claim(3.0, size=10.0).verdict == stats.CONTRADICTS  # far smaller than claimed
  assert _claim(0.5, size=1.0).verdict == stats.INCONCLUSIVE  # neither 0 nor 1 excluded
  assert _claim(0.5, size=3.0).verdict == stats.CONTRADICTS  # 3 excluded, 0 not
  assert "by about 1.4" in matched.claim


def test_verdict_of_no_difference_with_a_margin():
  tight_a, tight_b = [10.0, 10.1, 9.9], [10.05, 10.15, 9.95]  # a - b in -0.05 ± 0.32
  c = stats.compare(tight_a, tight_b)
  assert stats.verdict(c, "same", 1.0).verdict == stats.REPRODUCES
  assert stats.verdict(c, "same", 0.1).verdict == stats.INCONCLUSIVE
  assert _claim(-3.0, "same", 0.5).verdict == stats.CONTRADICTS
  with pytest.raises(ValueError, match="margin"):
    stats.verdict(c, "same")
  with pytest.raises(ValueError, match="positive"):
    stats.verdict(c, "lower", size=-1.0)


def test_convergence_over_the_last_fifth():
  steps = [0, 100, 200, 300, 400, 500]
  values = [0.9, 0.4, 0.3, 0.25, 0.2, 0.19]
  result = stats.convergence(steps, values, half_width=0.02)
  assert result.from_step == 400 and result.to_step == 500
  assert result.change == pytest.approx(-0.01) and result.converged
  assert not stats.convergence(steps, values, half_width=0.005).converged
  epochs = stats.convergence([1, 2], [0.30, 0.20], half_width=0.05)  # window from epoch 1.6
  assert epochs.from_step == pytest.approx(1.6) and epochs.change == pytest.approx(-0.04)
  assert epochs.converged
  no_interval = stats.convergence(steps, values, half_width=math.nan)
  assert no_interval.change == pytest.approx(-0.01) and not no_interval.converged
  short = stats.convergence([5], [0.3], half_width=0.1)
  assert math.isnan(short.change) and not short.converged
  with pytest.raises(ValueError, match="ascending"):
    stats.convergence([2, 1], [0.3, 0.2], 0.1)
