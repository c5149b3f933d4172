"""What both command lines share: one line for a user's mistake, and one duration syntax."""

import functools
import re
import sys

import click


def fail(message, code=1):
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def user_errors(errors, interrupted="interrupted"):
    """A decorator: a mistake the user can fix (an exception of `errors`) ends as one line on stderr and a
    non-zero exit, never a traceback; so does an OSError (disk full, permissions) and Ctrl-C."""

    def decorate(command):
        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            try:
                return command(*args, **kwargs)
            except errors as e:
                fail(str(e))
            except OSError as e:
                fail(f"{e.filename}: {e.strerror or e}" if e.filename else str(e.strerror or e))
            except KeyboardInterrupt:
                fail(interrupted, 130)

        return wrapper

    return decorate


def parse_duration(ctx, param, value):
    """'90s', '10m', '1.5h' or plain seconds -> seconds (a click callback)."""
    if value is None or isinstance(value, float):
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", str(value))
    if not match:
        raise click.BadParameter(f"{value!r}: use a number of seconds or a duration like 90s, 10m, 2h")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]
