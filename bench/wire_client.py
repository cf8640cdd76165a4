"""A lean HTTP/1.1 keep-alive client for latency benches: what the server adds, not the client.

httpx spends ~0.5-0.9 ms of Python per request on this machine (its models, hooks and header
handling) and http.client ~0.3 ms (it parses headers with the email package): more than the
router takes to decide. This client writes the request bytes itself and reads the status line,
the headers and a Content-Length body off one TCP_NODELAY socket, so a round trip is the
server, the kernel's loopback and a few microseconds of parsing. It speaks only what the
bench needs (Content-Length bodies, no chunking, no redirects) and refuses anything else.
"""

from __future__ import annotations

import json
import socket
from typing import Any
from urllib.parse import urlsplit


class WireError(RuntimeError):
    """The server answered something this client does not parse, or closed the connection."""


class Http1Client:
    """One keep-alive connection to ``base_url`` (``http://host:port``)."""

    def __init__(self, base_url: str, timeout_s: float = 30.0) -> None:
        url = urlsplit(base_url)
        if url.scheme != "http" or url.hostname is None or url.port is None:
            raise ValueError(f"need http://host:port, got {base_url!r}")
        self._host = f"{url.hostname}:{url.port}".encode()
        self._sock = socket.create_connection((url.hostname, url.port), timeout=timeout_s)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = b""

    def __enter__(self) -> Http1Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def get(self, path: str) -> tuple[int, bytes]:
        """``GET path``: the status code and the body."""
        return self._send(b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path.encode(), self._host))

    def post_json(self, path: str, doc: Any) -> tuple[int, bytes]:
        """``POST path`` with ``doc`` as a JSON body: the status code and the body."""
        body = json.dumps(doc).encode()
        head = (b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % (path.encode(), self._host, len(body)))
        return self._send(head + body)

    def _send(self, request: bytes) -> tuple[int, bytes]:
        self._sock.sendall(request)
        while (end := self._buf.find(b"\r\n\r\n")) < 0:
            self._recv()
        head, self._buf = self._buf[:end].split(b"\r\n"), self._buf[end + 4:]
        status = int(head[0].split(b" ", 2)[1])
        length = None
        for line in head[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                raise WireError("chunked responses are not supported")
        if length is None:
            raise WireError(f"no Content-Length in the answer: {head[0]!r}")
        while len(self._buf) < length:
            self._recv()
        body, self._buf = self._buf[:length], self._buf[length:]
        return status, body

    def _recv(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise WireError("the server closed the connection")
        self._buf += chunk
