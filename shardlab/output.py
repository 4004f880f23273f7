"""Output files, argument types and input errors shared by every shardlab subcommand.

An output is written whole (to a temporary file beside it, then renamed) or not at
all, and its path is checked before any work starts. The path ``-`` (`STDOUT`) means
standard output: the JSON is printed there once the work is done, and the command
prints no table, so a program can read stdout as one JSON document. `UsageError` is bad input from
the command line: the CLI prints its one line and exits with code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Any, Sequence

__all__ = ["UsageError", "STDOUT", "check_output_path", "cannot_write_in",
           "write_json_atomic", "int_arg", "router_arg"]

#: The output path that means standard output.
STDOUT = "-"


class UsageError(ValueError):
    """Bad input from the command line: one line, exit code 2."""


def check_output_path(path: str, flag: str = "--json", inputs: Sequence[str] = ()) -> str:
    """Fail early (before any work) on an output path that cannot be written whole.

    Returns the real path to write (a symbolic link is followed to its target), or
    `STDOUT` for ``-``.
    """
    if path == STDOUT:
        return STDOUT
    if not path:
        raise UsageError(f"{flag} '': give a file name")
    real = os.path.realpath(path)
    if os.path.isdir(real):
        raise UsageError(f"{flag} {path!r}: is a directory; give a file name")
    if os.path.exists(real):
        if not os.path.isfile(real):
            raise UsageError(f"{flag} {path!r}: exists and is not a regular file")
        if not os.access(real, os.W_OK):
            raise UsageError(f"{flag} {path!r}: exists and is not writable")
        if any(os.path.exists(i) and os.path.samefile(real, i) for i in inputs if i):
            raise UsageError(f"{flag} {path!r}: is an input of this run; give another name")
    directory = os.path.dirname(real)
    if not os.path.isdir(directory):
        raise UsageError(f"{flag} {path!r}: directory {directory!r} does not exist")
    problem = cannot_write_in(directory)
    if problem:  # the rename needs a file of our own in that directory
        raise UsageError(f"{flag} {path!r}: cannot write in {directory!r}: {problem}")
    return real


def cannot_write_in(directory: str | os.PathLike) -> str:
    """Why a new file cannot be made in ``directory`` ("" if one can), found by making
    and removing a scratch file: permission bits alone miss read-only mounts."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".shardlab-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return e.strerror or str(e)
    return ""


def write_json_atomic(path: str, data: Any, inputs: Sequence[str] = ()) -> None:
    """Write ``data`` as JSON to ``path`` whole, or leave ``path`` untouched."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    real = check_output_path(path, inputs=inputs)
    if real == STDOUT:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    fd, tmp = tempfile.mkstemp(prefix=".shardlab-", suffix=".json",
                               dir=os.path.dirname(real))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary new file, not mkstemp's 0600
        os.replace(tmp, real)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def int_arg(lo: int, hi: int | None = None):
    """An argparse type: an integer from ``lo`` (to ``hi``), else a one-line error."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or v < lo or (hi is not None and v > hi):
            rng = f"an integer from {lo} to {hi}" if hi is not None else f"an integer >= {lo}"
            raise argparse.ArgumentTypeError(f"{text!r}: must be {rng}")
        return v
    return parse


def router_arg(text: str) -> str:
    """An argparse type: a registered router profile name."""
    from layer.routing import PROFILE_NAMES
    if text not in PROFILE_NAMES:
        raise argparse.ArgumentTypeError(
            f"{text!r} is unknown; allowed: {', '.join(PROFILE_NAMES)}")
    return text
