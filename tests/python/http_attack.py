"""Raw-socket HTTP/1.1 tools for attacking dsocr-server on loopback (test_http_robustness.py).

Everything here writes and reads exact bytes: no HTTP library normalises headers, merges
duplicate fields or hides how a connection ended. Every read has a deadline, so a server that
never answers makes a test fail in bounded time instead of hanging the suite.
"""
import base64
import fcntl
import functools
import io
import json
import os
import re
import resource
import select
import socket
import struct
import subprocess
import termios
import time
import zlib
from dataclasses import dataclass, field

from conftest import BIN_DIR

HOST = "127.0.0.1"


@functools.lru_cache(maxsize=1)
def server_help() -> str:
    out = subprocess.run([str(BIN_DIR / "dsocr-server"), "--help"], capture_output=True,
                         text=True, timeout=60)
    return out.stdout + out.stderr


def supported_flags(*pairs: tuple[str | tuple[str, ...], str]) -> list[str]:
    """The (flag, value) pairs as argv, keeping only flags `dsocr-server --help` lists; a flag
    given as a tuple of spellings uses the first one listed.

    The HTTP-layer flags (--header-timeout-s, ...) arrive with the new server; against an older
    binary they are dropped, and the tests that rely on them fail on the behaviour they check
    rather than on an unknown flag."""
    text = server_help()
    argv: list[str] = []
    for names, value in pairs:
        for flag in (names,) if isinstance(names, str) else names:
            if re.search(r"^\s*" + re.escape(flag) + r"(?=\s|$)", text, re.M):
                argv += [flag, value]
                break
    return argv


def raise_fd_limit(wanted: int = 8192) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def socket_count(pid: int) -> int:
    """Sockets the process holds open: connections it has accepted, among others."""
    count = 0
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            count += os.readlink(f"{fd_dir}/{fd}").startswith("socket:")
        except OSError:
            pass  # closed meanwhile
    return count


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection((HOST, port), timeout=timeout)


def open_many(port: int, count: int, first_bytes: bytes, timeout: float = 20.0
              ) -> list[socket.socket]:
    """Up to `count` connections, opened one after another as a flooding client does, each
    having sent first_bytes; those opened within timeout (the caller closes them)."""
    opened: list[socket.socket] = []
    deadline = time.monotonic() + timeout
    try:
        while len(opened) < count and time.monotonic() < deadline:
            sock = socket.create_connection((HOST, port), timeout=max(0.1, deadline -
                                                                      time.monotonic()))
            opened.append(sock)
            sock.sendall(first_bytes)
    except OSError:
        pass
    return opened


def wait_sent(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True once the peer's kernel has acknowledged every byte sent (the send queue is empty):
    a reset after it cannot discard any of the request."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0] == 0:
            return True
        time.sleep(0.001)
    return False


def reset(sock: socket.socket) -> None:
    """Closes with SO_LINGER 0: the kernel sends RST, as a crashed or impatient client does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def request_bytes(method: str, path: str, headers: list[tuple[str, str]] | None = None,
                  body: bytes | None = None, content_length: bool = True) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
    lines += [f"{k}: {v}" for k, v in headers or []]
    if body is not None and content_length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


def chunked(body: bytes, chunk: int = 1 << 16) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(body[i:i + chunk]), body[i:i + chunk])
             for i in range(0, len(body), chunk)]
    return b"".join(parts) + b"0\r\n\r\n"


class Closed(Exception):
    """The server closed (FIN or RST) before a whole response arrived."""

    def __init__(self, how: str, partial: bytes):
        super().__init__(f"connection {how} after {len(partial)} bytes: {partial[:300]!r}")
        self.how = how
        self.partial = partial


class TimedOut(Exception):
    """No whole response before the deadline."""


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    raw_head: bytes = b""
    events: list[bytes] = field(default_factory=list)  # SSE "data: " payloads, if any

    def __repr__(self) -> str:
        return f"<HTTP {self.status} {self.reason} {self.headers} body={self.body[:300]!r}>"

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def json(self):
        return json.loads(self.body)

    @property
    def closes(self) -> bool:
        return (self.header("Connection") or "").lower() == "close"


class Reader:
    """Reads responses off one connection, keeping bytes that belong to the next (pipelining)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""
        self.eof = False

    def _fill(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimedOut(f"no complete response in time; have {self.buf[:300]!r}")
        self.sock.settimeout(remaining)
        try:
            piece = self.sock.recv(1 << 16)
        except socket.timeout:
            raise TimedOut(f"no complete response in time; have {self.buf[:300]!r}") from None
        except (ConnectionResetError, BrokenPipeError):
            self.eof = True
            raise Closed("reset", self.buf) from None
        if not piece:
            self.eof = True
            raise Closed("closed", self.buf)
        self.buf += piece

    def _take_line(self, deadline: float) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill(deadline)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _take(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_response(self, timeout: float = 10.0, head_request: bool = False,
                      skip_interim: bool = True) -> Response:
        """The next final response; interim 1xx responses before it are skipped, as RFC 9110
        §15.2 requires of every client (the server may send 100 Continue unasked)."""
        deadline = time.monotonic() + timeout
        while True:
            r = self._read_one(deadline, head_request)
            if not (skip_interim and 100 <= r.status < 200):
                return r

    def _read_one(self, deadline: float, head_request: bool) -> Response:
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        m = re.match(rb"HTTP/1\.[01] (\d{3}) ?(.*)", lines[0])
        assert m, f"not an HTTP status line: {lines[0][:200]!r}"
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers.append((k.decode("latin-1").strip(), v.decode("latin-1").strip()))
        r = Response(int(m.group(1)), m.group(2).decode("latin-1"), headers, b"", head)
        if head_request or r.status in (204, 304) or 100 <= r.status < 200:
            return r
        if (r.header("Transfer-Encoding") or "").lower() == "chunked":
            body = io.BytesIO()
            while True:
                size = int(self._take_line(deadline).split(b";")[0], 16)
                if size == 0:
                    while self._take_line(deadline):  # trailers
                        pass
                    break
                body.write(self._take(size, deadline))
                assert self._take(2, deadline) == b"\r\n", "bad chunk terminator"
            r.body = body.getvalue()
        elif r.header("Content-Length") is not None:
            r.body = self._take(int(r.header("Content-Length")), deadline)
        else:  # delimited by the close
            try:
                while True:
                    self._fill(deadline)
            except Closed:
                pass
            r.body, self.buf = self.buf, b""
        if (r.header("Content-Type") or "").startswith("text/event-stream"):
            r.events = [line[6:] for line in r.body.split(b"\n") if line.startswith(b"data: ")]
        return r

    def wait_closed(self, timeout: float) -> bool:
        """True when the server closes the connection (FIN or RST) within timeout; bytes that
        arrive meanwhile are kept in buf."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self._fill(deadline)
        except Closed:
            return True
        except TimedOut:
            return False


def exchange(port: int, raw: bytes, timeout: float = 10.0) -> Response:
    """One request on a fresh connection; the answer."""
    with connect(port, timeout) as sock:
        try:
            sock.sendall(raw)
        except OSError:  # answered early and closed: the answer is still there to read
            pass
        return Reader(sock).read_response(timeout)


def metrics_text(port: int) -> str:
    r = exchange(port, request_bytes("GET", "/metrics"))
    assert r.status == 200, r
    return r.body.decode()


def metric(text: str, name: str) -> float:
    m = re.search(r"^" + re.escape(name) + r" ([0-9.e+-]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def chat_body(max_tokens: int = 4, stream: bool = False, image_url: str | None = None,
              text: str = "Free OCR.", **extra) -> bytes:
    content = [{"type": "text", "text": text}]
    if image_url:
        content.insert(0, {"type": "image_url", "image_url": {"url": image_url}})
    body = {"model": "demo", "max_tokens": max_tokens, "stream": stream,
            "messages": [{"role": "user", "content": content}], **extra}
    return json.dumps(body).encode()


def page_png(size=(640, 800), seed: int = 0, lines: int = 12) -> bytes:
    from PIL import Image, ImageDraw
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    step = max(20, size[1] // (lines + 2))
    for i in range(lines):
        draw.text((40, 40 + step * i), f"Line {i + seed}: the quick brown fox {seed}", fill="black")
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


@functools.lru_cache(maxsize=1)
def _deflated_zeros(size: int) -> tuple[bytes, int, int]:
    """A raw deflate stream of `size` zero bytes, its CRC-32 and Adler-32."""
    zeros = b"\0" * (1 << 20)
    comp = zlib.compressobj(1, zlib.DEFLATED, -15)
    parts, crc, adler = [], 0, 1
    for _ in range(size >> 20):
        parts.append(comp.compress(zeros))
        crc = zlib.crc32(zeros, crc)
        adler = zlib.adler32(zeros, adler)
    parts.append(comp.flush())
    return b"".join(parts), crc, adler


def compression_bomb(encoding: str, inflated_size: int) -> bytes:
    """A gzip (RFC 1952) or deflate (zlib, RFC 1950) body that inflates to inflated_size zeros."""
    raw, crc, adler = _deflated_zeros(inflated_size)
    if encoding == "gzip":
        return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + raw
                + struct.pack("<II", crc, inflated_size & 0xFFFFFFFF))
    assert encoding == "deflate"
    return b"\x78\x01" + raw + struct.pack(">I", adler)


def readable(sock: socket.socket, timeout: float) -> bool:
    return bool(select.select([sock], [], [], max(0.0, timeout))[0])
