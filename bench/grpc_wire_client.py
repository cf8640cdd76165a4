"""A lean gRPC unary client over cleartext HTTP/2 for latency benches: the server's share.

grpcio's Python client spends several hundred microseconds per call on these cores (its
completion-queue thread hand-offs, call objects and metadata), about as much as the server it
is meant to measure. This client writes the HTTP/2 frames itself on one TCP_NODELAY socket: a
HEADERS frame with a prebuilt header block (HPACK literals, no Huffman, no dynamic table), one
DATA frame carrying the length-prefixed message, then reads frames until the stream ends. It
answers the server's SETTINGS and PINGs and keeps the connection's receive window open, which is
all a server needs from a client that sends one unary call at a time.

It does not decode the response headers (the server may Huffman-code them): a call counts as
successful when the stream carries exactly one message and ends cleanly; a trailers-only
answer (how gRPC reports an error) or a reset stream raises ``WireError``. Callers check the
decoded message, as the bench does.
"""

from __future__ import annotations

import socket
import struct

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _PING, _GOAWAY, _WINDOW_UPDATE = 0, 1, 3, 4, 6, 7, 8
_END_STREAM, _ACK, _END_HEADERS = 0x1, 0x1, 0x4
_WINDOW = 2**31 - 1
_REFILL_AT = 1 << 20


class WireError(RuntimeError):
    """The call did not end with exactly one message, or the server closed the connection."""


def _hpack_int(value: int, prefix_bits: int, first: int) -> bytes:
    """RFC 7541 section 5.1 integer with ``first``'s high bits as the pattern."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def _literal(value: bytes) -> bytes:
    return _hpack_int(len(value), 7, 0) + value


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", kind, flags, stream) + payload


class GrpcWireClient:
    """One HTTP/2 connection to ``host:port`` for sequential unary calls."""

    def __init__(self, target: str, timeout_s: float = 30.0) -> None:
        host, _, port = target.rpartition(":")
        self._authority = target.encode()
        self._sock = socket.create_connection((host, int(port)), timeout=timeout_s)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = bytearray()
        self._stream = -1
        self._unacked = 0
        settings = struct.pack(">HI", 0x4, _WINDOW)  # SETTINGS_INITIAL_WINDOW_SIZE
        self._sock.sendall(_PREFACE + _frame(_SETTINGS, 0, 0, settings)
                           + _frame(_WINDOW_UPDATE, 0, 0, struct.pack(">I", _WINDOW - 65535)))
        self._blocks: dict[str, bytes] = {}

    def __enter__(self) -> GrpcWireClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._sock.close()

    def call(self, method: str, request: bytes) -> bytes:
        """Unary call of ``method`` (``/package.Service/Method``): the serialized response."""
        block = self._blocks.get(method)
        if block is None:
            block = self._blocks[method] = (
                b"\x83\x86"  # :method POST, :scheme http (static table 3 and 6)
                + b"\x04" + _literal(method.encode())  # :path, name from the static table
                + b"\x01" + _literal(self._authority)  # :authority
                + _hpack_int(31, 4, 0) + _literal(b"application/grpc")  # content-type
                + b"\x00" + _literal(b"te") + _literal(b"trailers"))
        self._stream += 2
        stream = self._stream
        message = b"\x00" + struct.pack(">I", len(request)) + request
        self._sock.sendall(_frame(_HEADERS, _END_HEADERS, stream, block)
                           + _frame(_DATA, _END_STREAM, stream, message))
        body = bytearray()
        while True:
            kind, flags, sid, payload = self._read_frame()
            if sid == stream:
                if kind == _DATA:
                    body += payload
                    self._consumed(len(payload))
                elif kind == _RST_STREAM:
                    raise WireError(f"stream reset, error code {struct.unpack('>I', payload)[0]}")
                if kind in (_DATA, _HEADERS) and flags & _END_STREAM:
                    break
            elif kind == _SETTINGS and not flags & _ACK:
                self._sock.sendall(_frame(_SETTINGS, _ACK, 0, b""))
            elif kind == _PING and not flags & _ACK:
                self._sock.sendall(_frame(_PING, _ACK, 0, payload))
            elif kind == _GOAWAY:
                raise WireError("the server sent GOAWAY")
        if len(body) < 5:
            raise WireError(f"{method}: no message (a trailers-only answer: the call failed)")
        length = struct.unpack(">I", body[1:5])[0]
        if body[0] != 0 or len(body) != 5 + length:
            raise WireError(f"{method}: expected one uncompressed message, got {len(body)} bytes")
        return bytes(body[5:])

    def _consumed(self, n: int) -> None:
        self._unacked += n
        if self._unacked >= _REFILL_AT:
            self._sock.sendall(_frame(_WINDOW_UPDATE, 0, 0, struct.pack(">I", self._unacked)))
            self._unacked = 0

    def _read_frame(self) -> tuple[int, int, int, bytes]:
        while len(self._buf) < 9:
            self._recv()
        length = int.from_bytes(self._buf[:3], "big")
        kind, flags, sid = self._buf[3], self._buf[4], int.from_bytes(self._buf[5:9], "big")
        while len(self._buf) < 9 + length:
            self._recv()
        payload = bytes(self._buf[9:9 + length])
        del self._buf[:9 + length]
        return kind, flags, sid & 0x7FFFFFFF, payload

    def _recv(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise WireError("the server closed the connection")
        self._buf += chunk
