"""A tiny uwsgi protocol client for talking to a worker directly (no front end).

Packet: modifier1 u8 | vars size u16 LE | modifier2 u8 | vars (u16 LE key len, key, u16 LE value
len, value)... | body. The worker answers with a raw HTTP/1.x response and closes.
"""

import socket
import struct


def encode_vars(pairs) -> bytes:
    out = bytearray()
    for key, value in pairs:
        key = key.encode("latin-1") if isinstance(key, str) else key
        value = value.encode("latin-1") if isinstance(value, str) else value
        out += struct.pack("<H", len(key)) + key + struct.pack("<H", len(value)) + value
    return bytes(out)


def packet(pairs, body: bytes = b"", modifier1: int = 0, modifier2: int = 0) -> bytes:
    block = encode_vars(pairs)
    if len(block) > 0xFFFF:
        raise ValueError("vars block over 65535 bytes cannot be encoded")
    return struct.pack("<BHB", modifier1, len(block), modifier2) + block + body


def request_vars(method="GET", path="/", query="", body=b"", headers=None, script_name="",
                 content_type=None, extra=None):
    """The vars nginx's stock uwsgi_params would send for a simple request."""
    pairs = [("REQUEST_METHOD", method), ("REQUEST_URI", path + (f"?{query}" if query else "")),
             ("PATH_INFO", path), ("QUERY_STRING", query), ("SERVER_PROTOCOL", "HTTP/1.1"),
             ("SERVER_NAME", "localhost"), ("SERVER_PORT", "80"), ("REMOTE_ADDR", "127.0.0.1"),
             ("REMOTE_PORT", "40000"), ("REQUEST_SCHEME", "http"), ("HTTP_HOST", "localhost")]
    if script_name:
        pairs.append(("SCRIPT_NAME", script_name))
    if body or method in ("POST", "PUT"):
        pairs.append(("CONTENT_LENGTH", str(len(body))))
    if content_type:
        pairs.append(("CONTENT_TYPE", content_type))
    for k, v in (headers or {}).items():
        pairs.append(("HTTP_" + k.upper().replace("-", "_"), v))
    pairs += list(extra or [])
    return pairs


def connect(address, timeout: float = 10.0) -> socket.socket:
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(address)
    return s


def recv_all(s: socket.socket, limit: int = 64 << 20) -> bytes:
    """Read until the peer closes (or the limit/timeout); a reset ends the read too."""
    chunks, total = [], 0
    while total < limit:
        try:
            data = s.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
        total += len(data)
    return b"".join(chunks)


class Response:
    def __init__(self, raw: bytes):
        self.raw = raw
        head, sep, self.body = raw.partition(b"\r\n\r\n")
        self.complete_head = bool(sep)
        lines = head.split(b"\r\n")
        self.status_line = lines[0].decode("latin-1")
        parts = self.status_line.split(" ", 2)
        self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        self.headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            self.headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))

    def header(self, name: str):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None


def request(address, pairs, body: bytes = b"", timeout: float = 10.0) -> Response:
    """Send one request packet + body, read the whole response."""
    with connect(address, timeout) as s:
        s.sendall(packet(pairs, body))
        return Response(recv_all(s))


def get(address, path="/", **kw) -> Response:
    body = kw.pop("body", b"")
    return request(address, request_vars(path=path, body=body, **kw), body)
