"""The STOMP codec: framing rules of STOMP 1.0, 1.1 and 1.2, limits, and the serializer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qgate.protocols.stomp.codec import (
    V10,
    V11,
    V12,
    BadHeader,
    Frame,
    FrameError,
    FrameTooLarge,
    LineTooLong,
    Parser,
    TooManyHeaders,
    encode,
    escape,
    unescape,
)


def parse(data: bytes, version: str | None = V12, **limits: int) -> list[Frame]:
    p = Parser(version=version, **limits)
    p.feed(data)
    return p.frames()


def test_simple_frame():
    [f] = parse(b"SEND\ndestination:/queue/a\n\nhello\x00")
    assert f == Frame("SEND", {"destination": "/queue/a"}, b"hello")


def test_cr_lf_line_endings_are_accepted():
    [f] = parse(b"SEND\r\ndestination:/queue/a\r\nx:y\r\n\r\nbody\x00")
    assert f.command == "SEND"
    assert f.headers == {"destination": "/queue/a", "x": "y"}
    assert f.body == b"body"


def test_heart_beat_eols_between_frames_are_skipped():
    data = b"\n\r\n\nSEND\ndestination:/q/a\n\nA\x00\n\n\r\nSEND\ndestination:/q/b\n\nB\x00\n"
    frames = parse(data)
    assert [f.body for f in frames] == [b"A", b"B"]


def test_content_length_body_may_contain_nul():
    body = b"a\x00b\x00\x00c"
    data = b"SEND\ncontent-length:%d\n\n%s\x00" % (len(body), body)
    [f] = parse(data + data)[:1]
    assert f.body == body
    assert len(parse(data + data)) == 2


def test_without_content_length_the_body_ends_at_the_first_nul():
    frames = parse(b"SEND\n\nab\x00\nSEND\n\ncd\x00")
    assert [f.body for f in frames] == [b"ab", b"cd"]


@pytest.mark.parametrize(
    ("data", "version", "headers"),
    [
        pytest.param(
            b"MESSAGE\nfoo:World\nfoo:Hello\n\n\x00",
            V12,
            {"foo": "World"},
            id="repeated-first-wins",
        ),
        pytest.param(
            b"SEND\n key : value \n\n\x00", V12, {" key ": " value "}, id="values-not-trimmed"
        ),
        pytest.param(
            b"SEND\na:\nb:x:y\n\n\x00", V10, {"a": "", "b": "x:y"}, id="1.0-empty-and-colon-values"
        ),
        pytest.param(
            b"SEND\nk\\cey:a\\nb\\rc\\\\d\\ce\n\n\x00",
            V12,
            {"k:ey": "a\nb\rc\\d:e"},
            id="1.2-escapes-decoded",
        ),
        pytest.param(b"SEND\nk:a\\nb\n\n\x00", V10, {"k": "a\\nb"}, id="1.0-does-not-unescape"),
        pytest.param(
            b"CONNECT\npasscode:a\\tb\\c\n\n\x00",
            V12,
            {"passcode": "a\\tb\\c"},
            id="connect-never-unescaped",
        ),
        pytest.param(
            "SEND\nnäme:wért ✓\n\n\x00".encode(),
            V12,
            {"näme": "wért ✓"},
            id="utf-8-names-and-values",
        ),
    ],
)
def test_headers_are_read_as_the_version_says(data: bytes, version: str, headers: dict[str, str]):
    [f] = parse(data, version=version)
    assert f.headers == headers


def test_undefined_escape_is_a_protocol_error():
    with pytest.raises(BadHeader, match="undefined escape"):
        parse(b"SEND\nk:a\\tb\n\n\x00", version=V12)
    with pytest.raises(BadHeader):
        parse(b"SEND\nk:a\\\n\n\x00", version=V12)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        pytest.param(b"\rSEND\n\n\x00", FrameError, id="lone-cr-between-frames"),
        pytest.param(b"SEND\ncontent-length:2\n\nabc\x00", FrameError, id="no-nul-after-length"),
        pytest.param(b"SEND\ncontent-length:x\n\nabc\x00", BadHeader, id="length-not-a-number"),
        pytest.param(b"SEND\nk:\xff\xfe\n\n\x00", BadHeader, id="header-not-utf-8"),
        pytest.param(b"SEND\nnocolon\n\n\x00", BadHeader, id="header-without-colon"),
        pytest.param(b"SE ND\n\n\x00", FrameError, id="malformed-command"),
    ],
)
def test_malformed_frames_are_refused(data: bytes, error: type[Exception]):
    with pytest.raises(error):
        parse(data)


def test_frame_size_limit():
    with pytest.raises(FrameTooLarge):
        parse(b"SEND\n\n" + b"x" * 200 + b"\x00", max_frame=100)
    # Refused from content-length alone, before the body arrives.
    p = Parser(max_frame=100)
    p.feed(b"SEND\ncontent-length:1000\n\n")
    with pytest.raises(FrameTooLarge):
        p.next_frame()
    # A NUL-terminated body that never ends is refused once it passes the limit.
    p = Parser(max_frame=100)
    p.feed(b"SEND\n\n" + b"x" * 101)
    with pytest.raises(FrameTooLarge):
        p.next_frame()


def test_header_count_limit():
    headers = b"".join(b"h%d:v\n" % i for i in range(11))
    with pytest.raises(TooManyHeaders):
        parse(b"SEND\n" + headers + b"\n\x00", max_headers=10)
    assert parse(b"SEND\n" + headers + b"\n\x00", max_headers=11)


def test_line_length_limit_applies_before_the_line_ends():
    p = Parser(max_line=50)
    p.feed(b"SEND\nk:" + b"v" * 60)
    with pytest.raises(LineTooLong):
        p.next_frame()


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"])
def test_a_line_one_byte_over_the_limit_is_refused_whole_or_in_pieces(eol: bytes):
    """Found by fuzzing: a line of max_line + 1 bytes and a bare LF used to pass when it
    arrived whole and fail when it arrived in pieces."""
    data = b"SEND\nk:" + b"v" * 49 + eol + b"\n\x00"
    with pytest.raises(LineTooLong):
        parse(data, max_line=50)
    p = Parser(max_line=50)
    with pytest.raises(LineTooLong):
        for i in range(len(data)):
            p.feed(data[i : i + 1])
            p.frames()
    assert parse(b"SEND\nk:" + b"v" * 48 + eol + b"\n\x00", max_line=50)


def test_after_an_error_the_parser_keeps_failing():
    p = Parser()
    p.feed(b"SEND\nbad\n\n\x00SEND\n\n\x00")
    with pytest.raises(BadHeader):
        p.next_frame()
    with pytest.raises(BadHeader):
        p.next_frame()


def test_version_may_change_between_frames():
    p = Parser()
    p.feed(b"CONNECT\naccept-version:1.2\n\n\x00SEND\nk:a\\cb\n\n\x00")
    assert p.next_frame() is not None
    p.version = V12
    f = p.next_frame()
    assert f is not None and f.headers == {"k": "a:b"}


def test_incomplete_frames_wait_for_more_bytes():
    p = Parser()
    for chunk in (b"SE", b"ND\r", b"\nk:v", b"\n\n", b"bo", b"dy"):
        p.feed(chunk)
        assert p.next_frame() is None
    p.feed(b"\x00")
    assert p.next_frame() == Frame("SEND", {"k": "v"}, b"body")
    assert p.buffered == 0


# -- serializer -------------------------------------------------------------------------------


def test_encode_escapes_for_1_2():
    data = encode("MESSAGE", {"k:1": "a\nb\r\\"}, b"x", V12)
    assert data == b"MESSAGE\nk\\c1:a\\nb\\r\\\\\n\nx\x00"


def test_encode_1_1_does_not_escape_cr():
    assert escape("a\r\n:\\", V11) == "a\r\\n\\c\\\\"


def test_encode_1_0_flattens_line_breaks_and_drops_colon_names():
    data = encode("MESSAGE", [("a:b", "x"), ("k", "1\n2")], b"", V10)
    assert data == b"MESSAGE\nk:1 2\n\n\x00"


def test_encode_connected_is_not_escaped():
    assert encode("CONNECTED", {"server": "a:b"}, b"", V12) == b"CONNECTED\nserver:a:b\n\n\x00"


def test_encode_skips_repeated_headers():
    assert encode("MESSAGE", [("a", "1"), ("a", "2")]) == b"MESSAGE\na:1\n\n\x00"


@given(st.text())
def test_escape_round_trips(text: str):
    for version in (V11, V12):
        if version == V11 and "\r" in text:
            continue
        assert unescape(escape(text, version).encode(), version) == text


# -- any chunking parses to the same frames ---------------------------------------------------

header_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    max_size=20,
)
frames_st = st.lists(
    st.tuples(
        st.sampled_from(["SEND", "MESSAGE", "ACK", "SUBSCRIBE"]),
        # Names other than content-length: whether a frame has one is ``with_length``.
        st.lists(
            st.tuples(header_text.filter(lambda t: t not in ("", "content-length")), header_text),
            max_size=5,
        ),
        st.binary(max_size=64),
        st.booleans(),
        st.sampled_from([b"", b"\n", b"\r\n", b"\n\n"]),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(frames_st, st.data())
def test_any_chunking_parses_to_the_same_frames(frames, data):
    stream = b""
    expected = []
    for command, headers, body, with_length, eol in frames:
        hs = list(headers)
        if with_length:
            hs.insert(0, ("content-length", str(len(body))))
        elif b"\x00" in body:
            body = body.replace(b"\x00", b"")
        stream += eol + encode(command, hs, body, V12)
        first: dict[str, str] = {}
        for k, v in hs:
            first.setdefault(k, v)
        expected.append(Frame(command, first, body))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=len(stream) // 3 + 3)))
    p = Parser(version=V12)
    got: list[Frame] = []
    last = 0
    for cut in [*cuts, len(stream)]:
        p.feed(stream[last:cut])
        last = cut
        got.extend(p.frames())
    assert got == expected
    assert p.buffered == 0


def test_a_long_non_ascii_line_is_too_long_whole_or_in_pieces():
    """Line limits count bytes, whether the header block arrives whole or line by line."""
    frame = ("SEND\nk:" + "é" * 60 + "\n\n\x00").encode()
    for chunks in ([frame], [frame[:10], frame[10:]]):
        p = Parser(max_line=100)
        with pytest.raises(LineTooLong):
            for chunk in chunks:
                p.feed(chunk)
                p.frames()


def test_crlf_header_blocks_parse_like_lf_ones():
    p = Parser(version=V12)
    p.feed(b"SEND\r\ndestination:/queue/a\r\nx:1\r\n\r\nbody\n\nmore\x00")
    p.feed(b"SEND\ndestination:/queue/b\n\nz\x00")
    [a, b] = p.frames()
    assert a.headers == {"destination": "/queue/a", "x": "1"} and a.body == b"body\n\nmore"
    assert b.headers == {"destination": "/queue/b"} and b.body == b"z"
