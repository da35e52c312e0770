"""The value rules of the config's keys, declared once per key and checked in one pass.

Each config group declares a table {key: rule} beside its defaults (`optim.RULES`,
`data.config.RULES`, ...); `check` applies a table to a group and `check_keys` rejects keys
the defaults do not have (a typo in a config file or an override). Every number must be
finite: `inf` or `nan` is refused for every key, whatever its range. Checks that relate two
keys (a resize smaller than the input, a batch that must split) stay with their group.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from typing import Any

from cnn_jax.errors import ConfigError


def _is_int(value) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Num:
  """A finite int (`integer=True`) or real number in [low, high], either end open or absent;
  `also` lists single values allowed outside the range (mesh.data=-1)."""
  low: float | None = None
  high: float | None = None
  low_open: bool = False
  high_open: bool = False
  integer: bool = False
  also: tuple = ()
  hint: str = ""  # e.g. "e.g. 0.01", "0 = off"

  def describe(self) -> str:
    kind = "an int" if self.integer else "a number"
    if self.low is not None and self.high is not None:
      where = (f"in {'(' if self.low_open else '['}{_fmt(self.low)}, {_fmt(self.high)}"
               f"{')' if self.high_open else ']'}")
    elif self.low is not None:
      where = f"{'>' if self.low_open else '>='} {_fmt(self.low)}"
    elif self.high is not None:
      where = f"{'<' if self.high_open else '<='} {_fmt(self.high)}"
    else:
      where = "finite"
    also = "".join(f" or {v}" for v in self.also)
    return f"must be {kind} {where}{also}" + (f" ({self.hint})" if self.hint else "")

  def ok(self, value) -> bool:
    if value in self.also and _is_real(value):
      return True
    if not (_is_int(value) if self.integer else _is_real(value)) or not math.isfinite(value):
      return False
    if self.low is not None and (value <= self.low if self.low_open else value < self.low):
      return False
    return not (self.high is not None
                and (value >= self.high if self.high_open else value > self.high))


def _fmt(x: float) -> str:
  return str(int(x)) if float(x).is_integer() else str(x)


def positive(hint: str = "", integer: bool = False) -> Num:
  return Num(low=0, low_open=True, integer=integer, hint=hint)


def at_least(low: float, hint: str = "", integer: bool = False) -> Num:
  return Num(low=low, integer=integer, hint=hint)


def fraction(hint: str = "", high_open: bool = True, low_open: bool = False) -> Num:
  """A number in [0, 1), or another combination of open ends."""
  return Num(low=0, high=1, low_open=low_open, high_open=high_open, hint=hint)


@dataclasses.dataclass(frozen=True)
class Choice:
  choices: tuple

  def describe(self) -> str:
    return f"is not allowed; use one of {list(self.choices)}"

  def ok(self, value) -> bool:
    return isinstance(value, str) and value in self.choices


@dataclasses.dataclass(frozen=True)
class Bool:
  def describe(self) -> str:
    return "must be True or False"

  def ok(self, value) -> bool:
    return isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Str:
  nonempty: bool = False
  hint: str = ""

  def describe(self) -> str:
    return ("must be a non-empty string" if self.nonempty else "must be a string") + (
        f" ({self.hint})" if self.hint else "")

  def ok(self, value) -> bool:
    return isinstance(value, str) and (bool(value) or not self.nonempty)


def check_value(key: str, value, rule) -> None:
  """Raises ConfigError('key=value must be ...') unless `value` satisfies `rule`."""
  if not rule.ok(value):
    raise ConfigError(f"{key}={value!r} {rule.describe()}")


def check(prefix: str, group, rules: dict[str, Any]) -> None:
  """Checks every key of `group` that `rules` names (dotted keys reach into sub-groups)."""
  for key, rule in rules.items():
    value = group
    for part in key.split("."):
      value = value[part]
    check_value(f"{prefix}{key}", value, rule)


def check_keys(group, reference, prefix: str = "") -> None:
  """Refuses any key of `group` (recursively) that `reference`, the defaults, lacks."""
  for key in group:
    where = f"{prefix}{key}"
    if key not in reference:
      close = difflib.get_close_matches(key, list(reference), n=1)
      raise ConfigError(f"{where} is not a config key"
                        + (f"; did you mean {prefix}{close[0]}?" if close else "")
                        + f" ({prefix.rstrip('.') or 'the config'} has {', '.join(reference)})")
    if hasattr(group[key], "keys") and hasattr(reference[key], "keys"):
      check_keys(group[key], reference[key], f"{where}.")


def check_finite(group, prefix: str = "") -> None:
  """Refuses inf and nan anywhere in the config, in sequences too."""
  for key in group:
    value, where = group[key], f"{prefix}{key}"
    if hasattr(value, "keys"):
      check_finite(value, f"{where}.")
      continue
    for v in value if isinstance(value, (tuple, list)) else (value,):
      if _is_real(v) and not math.isfinite(v):
        raise ConfigError(f"{where}={value!r} must be finite")


def numeric_keys(group, prefix: str = "") -> list[str]:
  """The dotted keys whose value is a number (the tests check each has a rule)."""
  out = []
  for key in group:
    value, where = group[key], f"{prefix}{key}"
    if hasattr(value, "keys"):
      out += numeric_keys(value, f"{where}.")
    elif _is_real(value):
      out.append(where)
  return out
