"""The few ASGI steps every HTTP app of the gateway shares (POS/1, UP/1, metrics).

Only ASGI messages: hypercorn parses HTTP, these functions never touch a socket.
"""
from __future__ import annotations


async def lifespan(receive, send) -> None:
    """Answer the server's startup and shutdown: the apps hold no state of their own to set up."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def respond(send, status: int, content_type: str, body: bytes, *, extra=(), head: bool = False) -> None:
    """One whole response; `head` sends the headers of a GET without its body."""
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store"), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})
