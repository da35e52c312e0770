"""The one exception type for mistakes a user can fix: bad config, bad data, bad paths."""


class UserError(Exception):
  """A problem the user can fix; the message names the problem and the fix in one line.

  `run.py` prints it without a traceback and exits with status 2.
  """


class ConfigError(UserError):
  """A config key has a wrong value, or a combination of values is impossible."""


def one_line(e: BaseException, limit: int = 200) -> str:
  """'Type: message' of `e` on one line, at most `limit` characters: a cause quoted in a
  UserError's message (a library's message may span lines)."""
  return " ".join(f"{type(e).__name__}: {e}".split())[:limit]
