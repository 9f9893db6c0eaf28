"""Raw HTTP/1.1 over a socket, for what `requests` hides: truncated bodies, exact bytes, timing."""

import socket
import time


class RawResponse:
    def __init__(self, raw: bytes, elapsed: float):
        self.raw, self.elapsed = raw, elapsed
        head, sep, body = raw.partition(b"\r\n\r\n")
        self.complete_head = bool(sep)
        lines = head.split(b"\r\n")
        self.status_line = lines[0].decode("latin-1")
        parts = self.status_line.split(" ", 2)
        self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        self.reason = parts[2] if len(parts) > 2 else ""
        self.headers = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            self.headers.append((name.decode("latin-1").strip(), value.strip().decode("latin-1")))
        self.raw_body = body
        te = (self.header("Transfer-Encoding") or "").lower()
        self.chunked = "chunked" in te
        if self.chunked:
            self.body, self.chunked_complete = _dechunk(body)
        else:
            self.body, self.chunked_complete = body, None

    def header(self, name: str):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def header_all(self, name: str):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    @property
    def content_length(self):
        v = self.header("Content-Length")
        return int(v) if v is not None else None

    @property
    def truncated(self) -> bool:
        """True if the body ended before its framing said it would (an aborted response)."""
        if self.chunked:
            return not self.chunked_complete
        if self.content_length is not None:
            return len(self.body) < self.content_length
        return False


def _dechunk(data: bytes):
    out, pos = bytearray(), 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return bytes(out), False
        try:
            size = int(data[pos:end].split(b";")[0], 16)
        except ValueError:
            return bytes(out), False
        pos = end + 2
        if size == 0:
            return bytes(out), data[pos:pos + 2] == b"\r\n" or data.find(b"\r\n\r\n", pos - 2) >= 0
        if len(data) < pos + size:
            out += data[pos:]
            return bytes(out), False
        out += data[pos:pos + size]
        pos += size + 2


def request(port: int, method: str, path: str, headers=None, body: bytes = b"",
            timeout: float = 10.0, host: str = "127.0.0.1", version: str = "HTTP/1.1") -> RawResponse:
    """One request with `Connection: close`; reads until the server closes.

    `headers`: a dict (replacing the defaults of the same name; a None value drops one, e.g.
    Host) or a list of (name, value) pairs sent after the defaults as they are, repeated names
    included."""
    hdrs = {"Host": f"127.0.0.1:{port}", "Connection": "close"}
    if body or method in ("POST", "PUT"):
        hdrs["Content-Length"] = str(len(body))
    extra = []
    if isinstance(headers, dict):
        hdrs.update(headers)
    else:
        extra = list(headers or [])
    lines = [(k, v) for k, v in hdrs.items() if v is not None] + extra
    head = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in lines) + "\r\n"
    start = time.monotonic()
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(head.encode("latin-1") + body)
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
    return RawResponse(b"".join(chunks), time.monotonic() - start)
