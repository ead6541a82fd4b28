"""STOMP 1.0/1.1/1.2 framing: an incremental parser (bytes in, frames out) and a serializer.

No I/O and no Twisted here. The parser is pull-based: ``feed()`` buffers bytes and
``next_frame()`` returns one frame at a time, so the caller can change ``version`` (header
escaping) between frames, as happens after CONNECT/CONNECTED, and can stop pulling while it
applies back-pressure. Every violation raises a ``FrameError`` subclass whose message is
fit for the ``message`` header of an ERROR frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

V10, V11, V12 = "1.0", "1.1", "1.2"
#: Versions this codec speaks, lowest first.
VERSIONS: tuple[str, ...] = (V10, V11, V12)

#: STOMP 1.2 "Value Encoding": CONNECT and CONNECTED frames do not escape their headers.
UNESCAPED_COMMANDS = frozenset({"CONNECT", "CONNECTED"})

NUL = 0
LF = 10
CR = 13

DEFAULT_MAX_FRAME = 1024 * 1024
DEFAULT_MAX_HEADERS = 128
DEFAULT_MAX_LINE = 16 * 1024
#: Header blocks up to this size are parsed in one piece (larger ones line by line).
FAST_HEAD = 16 * 1024


class FrameError(Exception):
    """The byte stream breaks STOMP framing; the connection cannot continue."""


class FrameTooLarge(FrameError):
    """A frame (command, headers and body) is longer than the configured maximum."""


class TooManyHeaders(FrameError):
    """A frame has more header lines than allowed."""


class LineTooLong(FrameError):
    """A command or header line is longer than allowed."""


class BadHeader(FrameError):
    """A header line is malformed: no colon, bad UTF-8, an undefined escape, a bad length."""


@dataclass(slots=True)
class Frame:
    """One STOMP frame. ``headers`` keeps the first value of a repeated header, in order."""

    command: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)


# -- header value encoding -------------------------------------------------------------------

_UNESCAPE_12 = {ord("r"): "\r", ord("n"): "\n", ord("c"): ":", ord("\\"): "\\"}
# STOMP 1.1 defines \n, \c and \\ only; \r is accepted as well (it cannot be ambiguous).
_UNESCAPE_11 = _UNESCAPE_12

_ESCAPE_12 = str.maketrans({"\\": "\\\\", "\r": "\\r", "\n": "\\n", ":": "\\c"})
_ESCAPE_11 = str.maketrans({"\\": "\\\\", "\n": "\\n", ":": "\\c"})
# STOMP 1.0 has no escaping: line breaks cannot be carried, so they become spaces.
_FLATTEN_10 = str.maketrans({"\r": " ", "\n": " "})


def unescape(raw: bytes, version: str | None) -> str:
    """Decode one header name or value (UTF-8) and undo the escaping of ``version``."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadHeader("header is not valid UTF-8") from None
    return unescape_text(text, version)


def unescape_text(text: str, version: str | None) -> str:
    """Undo the header escaping of ``version`` in already decoded text."""
    if version is None or version == V10 or "\\" not in text:
        return text
    table = _UNESCAPE_12 if version == V12 else _UNESCAPE_11
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        j = text.find("\\", i)
        if j < 0:
            out.append(text[i:])
            break
        out.append(text[i:j])
        if j + 1 >= n:
            # STOMP 1.2: undefined escape sequences MUST be treated as a fatal error.
            raise BadHeader("header ends in a lone backslash")
        repl = table.get(ord(text[j + 1]))
        if repl is None:
            raise BadHeader(f"undefined escape sequence \\{text[j + 1]} in a header")
        out.append(repl)
        i = j + 2
    return "".join(out)


# Before a version is agreed (an ERROR answering CONNECT), a value must read the same to a
# 1.0 peer (no escaping) and to a 1.1 or 1.2 one (escaping): no line breaks, and every
# backslash doubled, which 1.1 and 1.2 read back as one and 1.0 shows as two.
_UNNEGOTIATED = str.maketrans({"\\": "\\\\", "\r": " ", "\n": " "})


def escape_unnegotiated(text: str) -> str:
    """A header value fit for a frame sent before the version is negotiated."""
    return text.translate(_UNNEGOTIATED)


def escape(text: str, version: str | None) -> str:
    """Escape a header name or value for ``version`` (None: no escaping, as on CONNECTED)."""
    if version == V12:
        return text.translate(_ESCAPE_12)
    if version == V11:
        return text.translate(_ESCAPE_11)
    if version == V10:
        return text.translate(_FLATTEN_10)
    return text


# -- serializer ------------------------------------------------------------------------------


def encode(
    command: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    version: str | None = V12,
) -> bytes:
    """One frame as bytes, escaped for ``version``.

    Headers are written in order; a later header with a name already written is skipped
    (STOMP 1.2: repeated headers, the first one wins, so a later one would be dead weight).
    """
    items = headers.items() if isinstance(headers, Mapping) else headers
    esc = None if command in UNESCAPED_COMMANDS else version
    lines = [command]
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name, value in items:
        if name in seen:
            continue
        seen.add(name)
        pairs.append((name, value))
        lines.append(f"{name}:{value}")
    text = "\n".join(lines)
    count = len(pairs)
    # Almost no header needs escaping: one scan of the whole block finds out (every colon
    # and line break is a separator, and there is no backslash or CR), else escape each.
    if esc is not None and (
        text.count(":") != count or text.count("\n") != count or "\\" in text or "\r" in text
    ):
        text = _escaped(command, pairs, esc)
    return b"".join((text.encode("utf-8"), b"\n\n", body, b"\x00"))


def _escaped(command: str, pairs: list[tuple[str, str]], esc: str) -> str:
    lines = [command]
    for name, value in pairs:
        if esc == V10 and ":" in name:
            continue  # STOMP 1.0 cannot carry a colon in a header name
        lines.append(f"{escape(name, esc)}:{escape(value, esc)}")
    return "\n".join(lines)


# -- parser ----------------------------------------------------------------------------------

_COMMAND, _HEADERS, _BODY = 0, 1, 2


class Parser:
    """Incremental STOMP parser: ``feed(bytes)``, then ``next_frame()`` until it returns None.

    ``version`` selects header unescaping for frames other than CONNECT/CONNECTED; the
    protocol sets it once the version is negotiated. After a ``FrameError`` the stream is
    unusable (framing is lost) and the parser keeps raising.
    """

    def __init__(
        self,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_headers: int = DEFAULT_MAX_HEADERS,
        max_line: int = DEFAULT_MAX_LINE,
        version: str | None = None,
    ) -> None:
        self.max_frame = max_frame
        self.max_headers = max_headers
        self.max_line = max_line
        self.version = version
        self._buf = bytearray()
        self._pos = 0
        self._state = _COMMAND
        self._frame_start = 0
        self._command = ""
        self._headers: dict[str, str] = {}
        self._header_lines = 0
        self._length: int | None = None
        self._body_start = 0
        self._scan = 0
        self._error: FrameError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as frames."""
        return len(self._buf) - self._pos

    def feed(self, data: bytes) -> None:
        if self._pos and self._pos >= len(self._buf) // 2:
            # Drop consumed bytes now and then, not on every frame (amortized O(n)).
            del self._buf[: self._pos]
            shift = self._pos
            self._pos = 0
            self._frame_start -= shift
            self._body_start -= shift
            self._scan -= shift
        self._buf += data

    def frames(self) -> list[Frame]:
        """Every complete frame buffered now (for callers that never change ``version``)."""
        out = []
        while (frame := self.next_frame()) is not None:
            out.append(frame)
        return out

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None until more bytes arrive."""
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except FrameError as e:
            self._error = e
            raise

    def _next(self) -> Frame | None:
        buf = self._buf
        while True:
            if self._state == _COMMAND:
                # STOMP 1.2: heart-beat EOLs ([CR] LF) may appear between frames.
                while self._pos < len(buf):
                    b = buf[self._pos]
                    if b == LF:
                        self._pos += 1
                    elif b == CR:
                        if self._pos + 1 >= len(buf):
                            return None
                        if buf[self._pos + 1] != LF:
                            raise FrameError("CR not followed by LF between frames")
                        self._pos += 2
                    else:
                        break
                else:
                    return None
                self._frame_start = self._pos
                if self._whole_head():
                    continue
                line = self._line()
                if line is None:
                    return None
                command = self._text(line, "command")
                if not command or not command.isalnum() or not command.isascii():
                    raise FrameError(f"malformed command {command[:40]!r}")
                self._command = command
                self._headers = {}
                self._header_lines = 0
                self._length = None
                self._state = _HEADERS
            elif self._state == _HEADERS:
                line = self._line()
                if line is None:
                    return None
                if line:
                    self._header(line)
                    continue
                self._start_body()
            else:
                return self._body()

    def _whole_head(self) -> bool:
        """Parse the command and every header line at once when the block is buffered
        whole, ends its lines in LF only and is within the limits: the common case, in one
        decode and one split. Anything else (incomplete, CR LF, an error to report) is left
        to the line-by-line path, which finds the same frame or raises the precise error."""
        buf = self._buf
        start = self._pos
        end = buf.find(b"\n\n", start, start + min(self.max_frame, FAST_HEAD))
        if end < 0:
            return False
        head = bytes(buf[start:end])
        if b"\r" in head:
            return False
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError:
            return False
        lines = text.split("\n")
        command = lines[0]
        if (
            len(lines) > self.max_headers + 1
            or (len(head) > self.max_line and max(map(len, head.split(b"\n"))) > self.max_line)
            or not command.isalnum()
            or not command.isascii()
        ):
            return False
        headers: dict[str, str] = {}
        version = None if command in UNESCAPED_COMMANDS else self.version
        escaped = version is not None and version != V10 and "\\" in text
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                return False
            if escaped:
                name = unescape_text(name, version)
                value = unescape_text(value, version)
            # STOMP 1.2: repeated headers, the first one wins.
            if name not in headers:
                headers[name] = value
        self._command = command
        self._headers = headers
        self._header_lines = len(lines) - 1
        self._length = None
        self._pos = end + 2
        self._start_body()
        return True

    def _line(self) -> bytes | None:
        """The next line without its EOL, or None when it is not complete yet."""
        buf = self._buf
        end = buf.find(b"\n", self._pos)
        if end < 0:
            # One byte more than a line may hold: the CR of a CR LF still to come.
            if len(buf) - self._pos > self.max_line + 1:
                raise LineTooLong(f"a line is longer than {self.max_line} bytes")
            self._check_size(len(buf))
            return None
        stop = end
        # STOMP 1.2: EOL is an optional CR followed by LF.
        if stop > self._pos and buf[stop - 1] == CR:
            stop -= 1
        # The limit is on the line without its EOL, however its bytes arrived.
        if stop - self._pos > self.max_line:
            raise LineTooLong(f"a line is longer than {self.max_line} bytes")
        line = bytes(buf[self._pos : stop])
        self._pos = end + 1
        self._check_size(self._pos)
        return line

    def _check_size(self, upto: int) -> None:
        if upto - self._frame_start > self.max_frame:
            raise FrameTooLarge(f"frame is larger than {self.max_frame} bytes")

    @staticmethod
    def _text(raw: bytes, what: str) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadHeader(f"{what} is not valid UTF-8") from None

    def _header(self, line: bytes) -> None:
        self._header_lines += 1
        if self._header_lines > self.max_headers:
            raise TooManyHeaders(f"a frame may have at most {self.max_headers} headers")
        colon = line.find(b":")
        if colon < 0:
            raise BadHeader(f"header line without a colon: {line[:40]!r}")
        version = None if self._command in UNESCAPED_COMMANDS else self.version
        # STOMP 1.2: header names and values are not trimmed; a value may contain ':' raw
        # only in 1.0 (from 1.1 on a colon is escaped), so split on the first one.
        name = unescape(line[:colon], version)
        value = unescape(line[colon + 1 :], version)
        # STOMP 1.2: repeated headers, the first one wins.
        self._headers.setdefault(name, value)

    def _start_body(self) -> None:
        self._state = _BODY
        self._body_start = self._pos
        self._scan = self._pos
        length = self._headers.get("content-length")
        if length is not None and self.version == V10:
            length = length.strip()  # STOMP 1.0 peers may pad header values
        if length is not None:
            if not length.isdigit() or not length.isascii() or len(length) > 12:
                raise BadHeader(f"content-length is not a number: {length[:20]!r}")
            self._length = int(length)
            # Refuse a too large frame before buffering its body.
            self._check_size(self._body_start + self._length + 1)

    def _body(self) -> Frame | None:
        buf = self._buf
        if self._length is not None:
            # STOMP 1.2: with content-length, exactly that many octets, NULs included.
            end = self._body_start + self._length
            if len(buf) <= end:
                return None
            if buf[end] != NUL:
                raise FrameError("frame body is not followed by NUL (content-length mismatch)")
        else:
            end = buf.find(b"\x00", self._scan)
            if end < 0:
                self._scan = len(buf)
                self._check_size(len(buf))
                return None
            self._check_size(end + 1)
        frame = Frame(self._command, self._headers, bytes(buf[self._body_start : end]))
        self._pos = end + 1
        self._state = _COMMAND
        self._headers = {}
        return frame
