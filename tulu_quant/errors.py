"""The one base class for errors meant for the user.

A ``UserError`` is bad input, a bad setting or a machine that lacks something, phrased as one sentence that names the
file, key or value and says what to do. The CLI prints it and exits 2; any other exception is a bug and keeps its
traceback. Each stage subclasses it (``RecoverError``, ``QuantizeError`` ...), usually together with the built-in
exception whose meaning it has (``ValueError`` for a bad value, ``FileNotFoundError`` for a missing path), so callers
that catch the built-in keep working.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; the message says what and how."""


class UserValueError(UserError, ValueError):
    """A value (an argument, a setting, a file's content) that cannot work."""


class MissingPath(UserError, FileNotFoundError):
    """A file or folder the command needs is not there."""


class PathExists(UserError, FileExistsError):
    """An output that exists already and is only replaced with --force."""


class MissingLibrary(UserError, ImportError):
    """An optional library a stage needs is not installed; the message has the install command."""
