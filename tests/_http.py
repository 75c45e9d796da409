"""A raw HTTP/1.1 POST over one TCP connection, for tests that want the bytes as a device sends them."""
from __future__ import annotations

import trio


async def post_raw(port: int, path: str, body: bytes, token: str, ctype: str = "application/json") -> tuple[int, bytes]:
    """(status, response body) of one POST, the connection closed after it."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                              f"Authorization: Bearer {token}\r\nContent-Type: {ctype}\r\n"
                              f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        raw = b""
        while chunk := await stream.receive_some(65536):
            raw += chunk
    head, _, payload = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), payload
