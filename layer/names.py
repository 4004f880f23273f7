"""Channel and group names: their kinds, their non-local part, and validation.

A channel layer tells channels apart by name alone, and every sharding decision in
`layer.routing` starts here:

- a *normal* channel (``http.request``) may be served by any worker;
- a *process-specific* channel (``specific.AbCd!x1``, ASGI 2 / Channels 2+) has one
  listening process; the part up to and including the ``!`` is its *non-local name*,
  which the owning process listens on for all of its channels at once;
- a *single-reader* channel (``http.response?x1``, ASGI 1 / asgi_redis 1.x) has one
  reader but no process-local part;
- a *2015 response* channel (``!http.response.abc``, the first sharded Redis backend
  of Channels, Nov 2015 to Jan 2016) is marked by a leading ``!``.

Validation follows the generation's own rule (a *dialect*); errors are one line and
name the value and what is allowed.
"""

from __future__ import annotations

import re

__all__ = [
    "NORMAL",
    "PROCESS_SPECIFIC",
    "SINGLE_READER",
    "RESPONSE_2015",
    "DIALECTS",
    "MAX_NAME_LENGTH",
    "ChannelNameError",
    "kind_of",
    "non_local_name",
    "validate_channel_name",
    "validate_group_name",
    "local_token",
]

NORMAL = "normal"
PROCESS_SPECIFIC = "process-specific"
SINGLE_READER = "single-reader"
RESPONSE_2015 = "response-2015"

#: Channels' ``BaseChannelLayer.MAX_NAME_LENGTH``: names must be shorter than this.
MAX_NAME_LENGTH = 100

# Channels 2.x to 4.x (channels/layers.py): ASCII word characters, then optionally a
# "!" and a process-local part (Python's \w, so Unicode letters, after the "!").
_CHANNELS_RE = re.compile(r"^[a-zA-Z\d\-_.]+(\![\d\w\-_.]*)?$")
# ASGI 1 (asgi_redis 1.x): as above, with "?" (single reader) also allowed as the mark.
_ASGI1_RE = re.compile(r"^[a-zA-Z\d\-_.]+([?!][\d\w\-_.]*)?$")
# Channels 0.x (2015): shardlab's reading of that era's names: an optional leading "!"
# (response channel), then ASCII word characters, dots and hyphens.
_CHANNELS_2015_RE = re.compile(r"^!?[a-zA-Z\d\-_.]+$")
_GROUP_RE = re.compile(r"^[a-zA-Z\d\-_.]+$")

#: Name rules by generation, with the wording used in error messages.
DIALECTS = {
    "channels": (_CHANNELS_RE, "ASCII letters, digits, '-', '_' or '.', optionally "
                 "followed by '!' and a process-local part"),
    "asgi1": (_ASGI1_RE, "ASCII letters, digits, '-', '_' or '.', optionally "
              "followed by '!' or '?' and a local part"),
    "channels-2015": (_CHANNELS_2015_RE, "an optional leading '!' then ASCII letters, "
                      "digits, '-', '_' or '.'"),
}


class ChannelNameError(ValueError):
    """A channel or group name that the chosen generation would reject."""


def kind_of(name: str, dialect: str = "channels") -> str:
    """Return the kind of channel ``name`` is under ``dialect``.

    Parameters
    ----------
    name : str
        A channel name (not validated here).
    dialect : str
        ``"channels"``, ``"asgi1"`` or ``"channels-2015"`` (see `DIALECTS`).

    Returns
    -------
    str
        One of `NORMAL`, `PROCESS_SPECIFIC`, `SINGLE_READER`, `RESPONSE_2015`.
    """
    if dialect == "channels-2015":
        return RESPONSE_2015 if name.startswith("!") else NORMAL
    if "!" in name:
        return PROCESS_SPECIFIC
    if dialect == "asgi1" and "?" in name:
        return SINGLE_READER
    return NORMAL


def non_local_name(name: str) -> str:
    """The part of ``name`` up to and including its first ``!``; else the whole name.

    Same behaviour as Channels' ``BaseChannelLayer.non_local_name`` (2.x to 4.x):
    ``non_local_name("specific.AbCd!x1") == "specific.AbCd!"``.
    """
    i = name.find("!")
    return name if i < 0 else name[: i + 1]


def validate_channel_name(name: object, dialect: str = "channels", *,
                          receive: bool = False) -> str:
    """Return ``name`` if it is a valid channel name under ``dialect``; else raise.

    Parameters
    ----------
    name : object
        The candidate name.
    dialect : str
        A key of `DIALECTS`.
    receive : bool
        Channels 2+ only: a process-specific name given to ``receive()`` must end
        at the ``!`` (the process listens on its non-local name).

    Raises
    ------
    ChannelNameError
        With a one-line message naming the value and what is allowed.
    """
    try:
        pattern, allowed = DIALECTS[dialect]
    except KeyError:
        raise ChannelNameError(
            f"dialect {dialect!r} is unknown; allowed: {', '.join(DIALECTS)}") from None
    if not isinstance(name, str):
        raise ChannelNameError(f"channel name {name!r} is not a string")
    if len(name) >= MAX_NAME_LENGTH:
        raise ChannelNameError(
            f"channel name {name[:20]!r}... is {len(name)} characters; "
            f"allowed: fewer than {MAX_NAME_LENGTH}")
    if not pattern.match(name):
        raise ChannelNameError(f"channel name {name!r} is not valid; allowed: {allowed}")
    if receive and dialect == "channels" and "!" in name and not name.endswith("!"):
        raise ChannelNameError(
            f"channel name {name!r} given to receive must end at the '!' "
            f"(use {non_local_name(name)!r})")
    return name


def validate_group_name(name: object) -> str:
    """Return ``name`` if it is a valid group name (Channels 2+ rule); else raise."""
    if not isinstance(name, str):
        raise ChannelNameError(f"group name {name!r} is not a string")
    if len(name) >= MAX_NAME_LENGTH:
        raise ChannelNameError(
            f"group name {name[:20]!r}... is {len(name)} characters; "
            f"allowed: fewer than {MAX_NAME_LENGTH}")
    if not _GROUP_RE.match(name):
        raise ChannelNameError(
            f"group name {name!r} is not valid; allowed: ASCII letters, digits, "
            "'-', '_' or '.'")
    return name


def local_token(n: int) -> str:
    """The ``n``-th process-local part shardlab gives a reply channel: ``n`` in base 36.

    Simulator and model checker both name replies ``prefix + local_token(n)``, so a
    simulated run's channels are the model's (the releases used random hex here).
    """
    if n < 0:
        raise ValueError(f"token number {n!r} is not allowed; allowed: an integer >= 0")
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = digits[r] + out
        if n == 0:
            return out
