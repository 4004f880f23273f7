"""Tests for layer.names: kinds, non-local names, validation and its messages."""

import string

import pytest
from hypothesis import given, strategies as st

from layer import names
from layer.names import (
    ChannelNameError,
    kind_of,
    non_local_name,
    validate_channel_name,
    validate_group_name,
)

NAME_CHARS = string.ascii_letters + string.digits + "-_."
# Characters on and just past the edges of the rules: the marks, whitespace (the
# regex's "$" matches before a final "\n"), Unicode letters and digits (\w and \d
# after the "!"), and plain outsiders.
EDGE_CHARS = "!!??  \n\t\x00/:@éßж漢٣²"

candidate_names = st.one_of(
    st.text(st.sampled_from(NAME_CHARS + EDGE_CHARS), max_size=30),
    # mostly valid: a plain head, a mark, then a local part that may hold anything
    st.builds(lambda head, mark, local: head + mark + local,
              st.text(NAME_CHARS, min_size=1, max_size=20), st.sampled_from("!?"),
              st.text(st.sampled_from(NAME_CHARS + EDGE_CHARS), max_size=10)),
    st.text(max_size=30),
    # around the length limit (names must be shorter than 100)
    st.builds(lambda n, tail: "a" * n + tail,
              st.integers(90, 105), st.sampled_from(["", "!", "!x", "!\n", "?", "\n"])),
    st.none(),
    st.integers(),
    st.binary(max_size=8),
)


@pytest.fixture(scope="module")
def base_layer():
    layers = pytest.importorskip("channels.layers")
    return layers.BaseChannelLayer()


# -- kinds and non-local names ----------------------------------------------------

@pytest.mark.parametrize("name, dialect, kind", [
    ("http.request", "channels", names.NORMAL),
    ("specific.AbCd!x1", "channels", names.PROCESS_SPECIFIC),
    ("specific.AbCd!", "channels", names.PROCESS_SPECIFIC),
    ("http.response?x1", "channels", names.NORMAL),
    ("http.request", "asgi1", names.NORMAL),
    ("http.response?x1", "asgi1", names.SINGLE_READER),
    ("daphne.response.AbCd!x1", "asgi1", names.PROCESS_SPECIFIC),
    ("!http.response.abc", "channels-2015", names.RESPONSE_2015),
    ("http.request", "channels-2015", names.NORMAL),
])
def test_kind_of(name, dialect, kind):
    """Invariant: a name's kind follows its dialect's mark ("!", "?", leading "!")."""
    assert kind_of(name, dialect) == kind


@pytest.mark.parametrize("name, expected", [
    ("specific.AbCd!x1", "specific.AbCd!"),
    ("specific.AbCd!", "specific.AbCd!"),
    ("a!b!c", "a!"),
    ("http.request", "http.request"),
    ("", ""),
])
def test_non_local_name_examples(name, expected):
    """Invariant: non_local_name is the name up to and including its first "!"."""
    assert non_local_name(name) == expected


@given(st.text(st.sampled_from(NAME_CHARS + EDGE_CHARS), max_size=40) | st.text(max_size=40))
def test_non_local_name_equals_channels(base_layer, name):
    """Invariant: non_local_name equals channels' BaseChannelLayer.non_local_name."""
    assert non_local_name(name) == base_layer.non_local_name(name)


# -- acceptance -------------------------------------------------------------------

@given(name=candidate_names, receive=st.booleans())
def test_channels_dialect_accepts_exactly_what_channels_accepts(base_layer, name, receive):
    """Invariant: validate_channel_name(dialect="channels") accepts a name (and a
    receive-side name) exactly when channels' require_valid_channel_name does."""
    try:
        theirs = base_layer.require_valid_channel_name(name, receive=receive)
    except TypeError:
        theirs = False
    try:
        ours = validate_channel_name(name, "channels", receive=receive) == name
    except ChannelNameError:
        ours = False
    assert ours == theirs


@pytest.mark.parametrize("name, dialect", [
    ("a" * 99, "channels"),
    ("specific.AbCd!x1", "channels"),
    ("specific.AbCd!é٣", "channels"),
    ("http.response?x1", "asgi1"),
    ("daphne.response.AbCd!x1", "asgi1"),
    ("!http.response.abc", "channels-2015"),
    ("http.request", "channels-2015"),
])
def test_valid_names_are_returned(name, dialect):
    """Invariant: a name valid under its dialect is returned unchanged."""
    assert validate_channel_name(name, dialect) == name


def test_receive_on_process_specific_name_must_end_at_the_mark():
    """Invariant: receive accepts a "!" name only when it ends at the "!"."""
    assert validate_channel_name("specific.AbCd!", receive=True) == "specific.AbCd!"
    with pytest.raises(ChannelNameError):
        validate_channel_name("specific.AbCd!x1", receive=True)
    # the rule is Channels 2+'s; ASGI 1 readers received on the full name
    assert validate_channel_name("daphne.AbCd!x1", "asgi1", receive=True) == "daphne.AbCd!x1"


# -- error messages ---------------------------------------------------------------

@pytest.mark.parametrize("name, dialect, receive, must_say", [
    # bad characters: the value and the allowed characters
    ("http request", "channels", False, ["'http request'", "allowed", "ASCII letters"]),
    ("http.response?x1", "channels", False, ["'http.response?x1'", "allowed"]),
    ("a!b", "channels-2015", False, ["'a!b'", "allowed", "leading '!'"]),
    # too long: the (cut) value, its length and the limit
    ("a" * 100, "channels", False, ["'" + "a" * 20 + "'", "100 characters",
                                    "allowed: fewer than 100"]),
    ("b" * 150, "asgi1", False, ["'" + "b" * 20 + "'", "150 characters", "fewer than 100"]),
    # receive on a name not ending at "!": the value and the name to use instead
    ("specific.AbCd!x1", "channels", True, ["'specific.AbCd!x1'", "must end at the '!'",
                                            "'specific.AbCd!'"]),
    # unknown dialect: the dialect and every allowed one
    ("http.request", "klingon", False, ["'klingon'", "allowed", *names.DIALECTS]),
    # not a string
    (5, "channels", False, ["5", "not a string"]),
    (None, "channels", False, ["None", "not a string"]),
    (b"http.request", "channels", False, ["b'http.request'", "not a string"]),
])
def test_channel_name_errors_are_one_line_and_say_what_is_allowed(name, dialect, receive,
                                                                   must_say):
    """Invariant: a rejected channel name raises ChannelNameError (a ValueError) with a
    one-line message naming the value and what is allowed."""
    with pytest.raises(ChannelNameError) as caught:
        validate_channel_name(name, dialect, receive=receive)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert "\n" not in message
    for part in must_say:
        assert part in message


@pytest.mark.parametrize("name, must_say", [
    ("chat room", ["'chat room'", "allowed"]),
    ("chat!room", ["'chat!room'", "allowed"]),
    ("g" * 100, ["'" + "g" * 20 + "'", "fewer than 100"]),
    (7, ["7", "not a string"]),
])
def test_group_name_errors_are_one_line(name, must_say):
    """Invariant: a rejected group name raises a one-line ChannelNameError naming the
    value and what is allowed; a valid one is returned."""
    assert validate_group_name("chat.room-1_x") == "chat.room-1_x"
    with pytest.raises(ChannelNameError) as caught:
        validate_group_name(name)
    message = str(caught.value)
    assert "\n" not in message
    for part in must_say:
        assert part in message


@given(name=candidate_names)
def test_group_names_accepted_exactly_as_channels_accepts(base_layer, name):
    """Invariant: validate_group_name accepts exactly what channels'
    require_valid_group_name accepts."""
    try:
        theirs = base_layer.require_valid_group_name(name)
    except TypeError:
        theirs = False
    try:
        ours = validate_group_name(name) == name
    except ChannelNameError:
        ours = False
    assert ours == theirs
