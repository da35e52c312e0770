"""Scaling laws over a grid of runs, with bootstrap intervals, held-out validation and a compute
frontier.

The joint law error(N, D) = a N^-alpha + b D^-beta + c (N parameters, D training examples) is
the form of Rosenfeld et al. 2019 and of Hoffmann et al. 2022 (Sec. 3.3, eq. (2)); the one-axis
law is error(N) = a N^-b + c. Both are fitted by scipy.optimize.least_squares in (log a, alpha,
log b, beta, c), each axis divided by its geometric mean, exponents in (0, 10], c >= 0, from
several starting points. Each coefficient's interval is a percentile bootstrap over seeds: a
grid point's (one distinct (N, D), or N) seeds resampled with replacement, the law refitted
from the full fit, the RNG seeded.

`holdout` fits on the smaller points and predicts the largest ones; `frontier` gives, per
training-FLOP budget, the best observed run and the law's optimum N_opt(C) under C = k N D
(Hoffmann et al. 2022, eq. (4)), with the exponent of N_opt against C;
`cnn_jax.scaling_plots` draws them. Results are dataclasses with `to_dict()` for JSON.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np

from cnn_jax import stats

JOINT_FORM = "error(N, D) = a N^-alpha + b D^-beta + c"
ONE_AXIS_FORM = "error(N) = a N^-b + c"
JOINT_NAMES, ONE_AXIS_NAMES = ("a", "alpha", "b", "beta", "c"), ("a", "b", "c")
N_BOOT, SEED = 1000, 0
EXPONENT_BOUNDS = (1e-6, 10.0)
START_EXPONENTS, START_FLOORS = (0.25, 0.5, 1.0), (0.0, 0.5, 0.9)  # floor: fraction of min error
HOLDOUT_KEYS = ("N", "D", "ND")
FLOPS_PER_MAC_TRAINING = 3  # forward, and twice that backward, per image


class _Result:
  """`to_dict()`: the dataclass's fields (those shown by repr) as JSON-safe values."""

  def to_dict(self) -> dict:
    return stats.json_safe({f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                            if f.repr})


@dataclasses.dataclass(frozen=True)
class Coefficient(_Result):
  """A fitted coefficient and its bootstrap percentile interval [low, high] (nan: none)."""
  value: float
  low: float
  high: float


@dataclasses.dataclass(frozen=True)
class LawFit(_Result):
  """A fitted scaling law: its coefficients (names in order, as in `form`) with intervals.

  runs and grid_points count what it was fitted on, n_range / d_range the span of N and D it
  saw (d_range None for the one-axis law); samples holds the bootstrap fits (rows in `names`
  order, original units; empty with no seed variation); boot_failed the refits that failed.
  """
  form: str
  names: tuple
  coefficients: dict
  runs: int
  grid_points: int
  n_range: tuple
  d_range: tuple | None
  rms_residual: float
  n_boot: int
  boot_failed: int
  seed: int
  level: float
  samples: np.ndarray = dataclasses.field(repr=False, compare=False)

  @property
  def params(self) -> np.ndarray:
    return np.array([self.coefficients[k].value for k in self.names])

  def predict(self, n, d=None, params=None) -> np.ndarray:
    """The law at N = n (and D = d), with the fitted coefficients or rows of `params`."""
    p = np.atleast_2d(self.params if params is None else params)[:, :, None]
    n = np.asarray(n, float).reshape(-1)
    out = p[:, 0] * n ** -p[:, 1] + p[:, -1]
    if len(self.names) == 5:
      out = out + p[:, 2] * np.asarray(d, float).reshape(-1) ** -p[:, 3]
    return out[0] if params is None or np.ndim(params) == 1 else out

  def band(self, n, d=None) -> tuple[np.ndarray, np.ndarray]:
    """The `level` percentile band of the bootstrap fits' predictions (nan: no samples)."""
    preds = self.predict(n, d, self.samples) if len(self.samples) else []
    return _percentiles(preds, self.level, np.size(n))


def _percentiles(samples, level: float, size) -> tuple[np.ndarray, np.ndarray]:
  """The (low, high) `level` percentile bounds over the rows of samples; nan with none."""
  if not len(samples):
    return np.full(size, np.nan), np.full(size, np.nan)
  low, high = np.percentile(samples, (50 * (1 - level), 50 * (1 + level)), axis=0)
  return low, high


def _least_squares(logx: list[np.ndarray], y: np.ndarray, starts) -> np.ndarray | None:
  """The best of least_squares from each start; theta = (log a', e1, [log b', e2,] c)."""
  from scipy import optimize  # pylint: disable=g-import-not-at-top
  k = len(logx)
  terms = lambda th: [np.exp(th[2 * i] - th[2 * i + 1] * logx[i]) for i in range(k)]
  residual = lambda th: sum(terms(th)) + th[-1] - y
  jac = lambda th: np.stack([c for t, lx in zip(terms(th), logx) for c in (t, -t * lx)]
                            + [np.ones_like(y)], axis=1)

  lower = [-np.inf, EXPONENT_BOUNDS[0]] * k + [0.0]
  upper = [np.inf, EXPONENT_BOUNDS[1]] * k + [np.inf]
  best = None
  for start in starts:
    start = np.clip(start, np.array(lower) + 1e-12, np.array(upper) - 1e-12)
    result = optimize.least_squares(residual, start, jac=jac, bounds=(lower, upper),
                                    method="trf", x_scale="jac", max_nfev=2000)
    if result.status > 0 and np.all(np.isfinite(result.x)) and (
        best is None or result.cost < best.cost):
      best = result
  return None if best is None else best.x


def _starts(logx, y):
  """Starting points: every combination of START_EXPONENTS per axis and START_FLOORS, each
  term carrying an equal share of the mean error above the floor."""
  out = []
  for floor in START_FLOORS:
    c0 = floor * float(y.min())
    share = max(float(y.mean()) - c0, 1e-12) / len(logx)
    for exps in itertools.product(START_EXPONENTS, repeat=len(logx)):
      th = [v for e, lx in zip(exps, logx) for v in (math.log(share) + e * float(lx.mean()), e)]
      out.append(np.array(th + [c0]))
  return out


def _grid(cols) -> tuple[np.ndarray, list[np.ndarray]]:
  """(the distinct grid points, one row each; the run indices of each)."""
  keys = np.stack(cols, axis=1)
  points, inverse = np.unique(keys, axis=0, return_inverse=True)
  return points, [np.flatnonzero(inverse.reshape(-1) == i) for i in range(len(points))]


def _fit(cols, error, names, form, n_boot, seed, level) -> LawFit:
  cols = [np.asarray(c, float).reshape(-1) for c in cols]
  y = np.asarray(error, float).reshape(-1)
  if any(len(c) != len(y) or np.any(c <= 0) for c in cols) or not np.all(np.isfinite(y)):
    raise ValueError("N, D and error must be arrays of one length (one entry per run), N and D "
                     "positive, the error finite")
  points, members = _grid(cols)
  distinct = [len(np.unique(c)) for c in cols]
  if min(distinct) < 3 or len(points) < len(names) + 1:
    raise ValueError(f"{form}: {len(points)} grid points with {distinct} distinct values per "
                     f"axis; the {len(names)}-coefficient fit needs at least 3 distinct values "
                     f"per axis and {len(names) + 1} grid points")
  scales = [float(np.exp(np.mean(np.log(c)))) for c in cols]
  logx = [np.log(c / s) for c, s in zip(cols, scales)]

  def to_units(th):  # (log a', e, ...) on N / N0 -> (a, e, ...) on N: a = a' N0^e
    return np.array([v for i, s in enumerate(scales)
                     for v in (math.exp(th[2 * i]) * s ** th[2 * i + 1], th[2 * i + 1])] + [th[-1]])

  theta = _least_squares(logx, y, _starts(logx, y))
  if theta is None:
    raise ValueError(f"{form}: least squares failed from every start")
  rng, refits = np.random.default_rng(seed), []
  for _ in range(n_boot if any(len(m) > 1 for m in members) else 0):
    idx = np.concatenate([rng.choice(m, size=len(m)) for m in members])
    refits.append(_least_squares([lx[idx] for lx in logx], y[idx], [theta]))
  samples = np.array([to_units(th) for th in refits if th is not None]).reshape(-1, len(names))
  failed = sum(th is None for th in refits)
  value, (low, high) = to_units(theta), _percentiles(samples, level, len(names))
  coefficients = {k: Coefficient(float(value[i]), float(low[i]), float(high[i]))
                  for i, k in enumerate(names)}
  fit = LawFit(form, names, coefficients, len(y), len(points),
               (float(cols[0].min()), float(cols[0].max())),
               (float(cols[1].min()), float(cols[1].max())) if len(cols) > 1 else None,
               0.0, n_boot, failed, seed, level, samples)
  rms = float(np.sqrt(np.mean((fit.predict(*cols) - y) ** 2)))
  return dataclasses.replace(fit, rms_residual=rms)


def fit_joint(n, d, error, n_boot: int = N_BOOT, seed: int = SEED,
              level: float = stats.LEVEL) -> LawFit:
  """error(N, D) = a N^-alpha + b D^-beta + c (Rosenfeld et al. 2019; Hoffmann et al. 2022,
  eq. (2)) over runs: n, d, error one entry per run, a grid point's seeds sharing (N, D).

  Needs 3 distinct N, 3 distinct D and 6 grid points (else ValueError). The intervals are the
  `level` percentiles of `n_boot` refits on seeds resampled within each grid point (RNG
  `seed`); nan where no grid point has two seeds.
  """
  return _fit([n, d], error, JOINT_NAMES, JOINT_FORM, n_boot, seed, level)


def fit_power_law(n, error, n_boot: int = N_BOOT, seed: int = SEED,
                  level: float = stats.LEVEL) -> LawFit:
  """error(N) = a N^-b + c over runs (one entry each; seeds share N), with the bootstrap
  intervals of `fit_joint`. Needs 4 distinct N (else ValueError)."""
  return _fit([n], error, ONE_AXIS_NAMES, ONE_AXIS_FORM, n_boot, seed, level)


def run_points(runs: list[dict], error_key: str = "eval_top1") -> dict[str, np.ndarray]:
  """The finished runs of `cnn_jax.collect.find_runs` as arrays: n (params), d
  (train_examples), error (1 - final[error_key]), seed and flops, the training cost
  FLOPS_PER_MAC_TRAINING x MACs per image x images trained (epoch x train_examples)."""
  keys = ("params", "train_examples", "macs", "epoch", error_key)
  done = [r for r in runs if r.get("final") and all(k in r["final"] for k in keys)]
  f = {k: np.array([r["final"][k] for r in done], float) for k in keys}
  return {"n": f["params"], "d": f["train_examples"], "error": 1 - f[error_key],
          "seed": np.array([r.get("seed") for r in done]),
          "flops": FLOPS_PER_MAC_TRAINING * f["macs"] * f["epoch"] * f["train_examples"]}


@dataclasses.dataclass(frozen=True)
class HeldOut(_Result):
  """One held-out grid point: the observed mean and interval over its seeds, the prediction of
  the law fitted without it (with its bootstrap band) and predicted - observed mean."""
  n: float
  d: float | None
  observed: stats.Interval
  predicted: float
  predicted_low: float
  predicted_high: float
  prediction_error: float
  inside_observed_interval: bool


@dataclasses.dataclass(frozen=True)
class Holdout(_Result):
  """A law fitted on the smaller grid points (`fit`) and its predictions of the held-out
  largest ones by `by` ("N", "D" or "ND" for N x D)."""
  by: str
  fit: LawFit
  points: list


def holdout(n, error, d=None, by: str = "N", count: int = 1, **fit_kwargs) -> Holdout:
  """Fits the law (joint if `d` is given, else one-axis) on all but the largest grid points and
  predicts those: every grid point whose N (by="N"), D (by="D") or N x D (by="ND") is among
  the `count` largest distinct values is held out. fit_kwargs go to the fit."""
  if by not in HOLDOUT_KEYS or (d is None and by != "N"):
    raise ValueError(f"by must be one of {HOLDOUT_KEYS} ('N' for a one-axis law), got {by!r}")
  n, y = np.asarray(n, float), np.asarray(error, float)
  d = None if d is None else np.asarray(d, float)
  key = {"N": n, "D": d, "ND": None if d is None else n * d}[by]
  distinct = np.unique(key)
  if not 1 <= count < len(distinct):
    raise ValueError(f"count={count} must lie in [1, {len(distinct) - 1}]: {len(distinct)} "
                     f"distinct {by} values")
  held = key >= distinct[-count]
  cols = [n] if d is None else [n, d]
  fit = (fit_joint if d is not None else fit_power_law)(*[c[~held] for c in cols], y[~held],
                                                         **fit_kwargs)
  points = []
  for point, idx in zip(*_grid([c[held] for c in cols])):
    observed = stats.mean_interval(y[held][idx], level=fit.level)
    predicted = float(fit.predict(*point)[0])
    low, high = (float(v[0]) for v in fit.band(*point))
    points.append(HeldOut(float(point[0]), float(point[1]) if d is not None else None, observed,
                          predicted, low, high, predicted - observed.mean,
                          observed.contains(predicted)))
  return Holdout(by, fit, points)


@dataclasses.dataclass(frozen=True)
class Frontier(_Result):
  """The compute frontier of a joint law (see `frontier`): k, the exponent of N_opt against C
  with its bootstrap interval, the grid points ({n, d, flops, error}: mean cost and error over
  seeds), and per budget the best observed grid point and the law's optimum."""
  k: float
  exponent: Coefficient
  budgets: list
  points: list
  observed: list
  optimum: list


def optimum(params: np.ndarray, budget, k: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(N_opt, D_opt, exponent) of error = a N^-alpha + b D^-beta + c under C = k N D: rows of
  `params` (a, alpha, b, beta, c) against `budget` C (Hoffmann et al. 2022, eq. (4)):
  N_opt = G (C / k)^(beta / (alpha + beta)), G = (alpha a / (beta b))^(1 / (alpha + beta))."""
  a, alpha, b, beta, _ = np.atleast_2d(params).T[:, :, None]
  exponent = beta / (alpha + beta)
  n_opt = (alpha * a / (beta * b)) ** (1 / (alpha + beta)) * (np.asarray(budget) / k) ** exponent
  return n_opt, np.asarray(budget) / (k * n_opt), exponent[:, 0]


def frontier(fit: LawFit, n, d, error, flops=None, k: float | None = None,
             budgets=None) -> Frontier:
  """The compute frontier of the runs (n, d, error, one entry each) and of the joint law `fit`.

  The training cost of a run is flops (e.g. `run_points`'s, 3 x MACs x images trained) or, if
  None, k x N x D. k is the FLOPs per parameter per training example of C = k N D (6 for dense
  networks in Hoffmann et al. 2022); if None it is estimated from flops as the geometric mean of
  C / (N D) over the runs (an approximation for CNNs, whose MACs per parameter vary with
  width; the exponent does not depend on k). budgets default to the grid points' costs. Per
  budget: the observed grid point of lowest mean error among those costing at most the budget,
  and the law's N_opt (with its bootstrap band), D_opt and error there; "extrapolated" marks an
  optimum outside the span of N and D the law was fitted on.
  """
  if len(fit.names) != 5:
    raise ValueError("the frontier needs the joint law (fit_joint)")
  n, d, y = (np.asarray(v, float) for v in (n, d, error))
  if flops is None and k is None:
    raise ValueError("give flops (each run's training cost) or k (C = k N D)")
  c = k * n * d if flops is None else np.asarray(flops, float)
  k = float(np.exp(np.mean(np.log(c / (n * d))))) if k is None else float(k)
  grid, members = _grid([n, d])
  cost = np.array([c[m].mean() for m in members])
  mean = np.array([y[m].mean() for m in members])
  budgets = np.unique(cost) if budgets is None else np.sort(np.asarray(budgets, float))
  observed = []
  for budget in budgets:
    ok = np.flatnonzero(cost <= budget * (1 + 1e-9))
    i = ok[np.argmin(mean[ok])] if len(ok) else None
    row = (None,) * 4 if i is None else (*map(float, grid[i]), float(cost[i]), float(mean[i]))
    observed.append(dict(zip(("budget", "n", "d", "flops", "error"), (float(budget), *row))))
  n_opt, d_opt, exponent = optimum(fit.params, budgets, k)
  law_error = fit.predict(n_opt[0], d_opt[0])
  boot_n, _, boot_e = optimum(fit.samples, budgets, k) if len(fit.samples) else ([], [], [])
  n_low, n_high = _percentiles(boot_n, fit.level, len(budgets))
  e_low, e_high = _percentiles(boot_e, fit.level, ())
  (n0, n1), (d0, d1) = fit.n_range, fit.d_range
  best = [{"budget": float(b), "n_opt": float(n_opt[0, i]), "n_low": float(n_low[i]),
           "n_high": float(n_high[i]), "d_opt": float(d_opt[0, i]),
           "error": float(law_error[i]), "extrapolated": not (
               n0 <= n_opt[0, i] <= n1 and d0 <= d_opt[0, i] <= d1)}
          for i, b in enumerate(budgets)]
  points = [dict(zip(("n", "d", "flops", "error"), map(float, (*g, cost[i], mean[i]))))
            for i, g in enumerate(grid)]
  return Frontier(k, Coefficient(float(exponent[0]), float(e_low), float(e_high)),
                  [float(b) for b in budgets], points, observed, best)
