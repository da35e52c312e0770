"""The one exception type for mistakes a user can fix: bad config, bad data, bad paths."""


class UserError(Exception):
  """A problem the user can fix; the message names the problem and the fix in one line.

  `run.py` prints it without a traceback and exits with status 2.
  """


class ConfigError(UserError):
  """A config key has a wrong value, or a combination of values is impossible."""
