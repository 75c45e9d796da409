"""`python -m benchmarks._hello PORT`: the baseline HTTP server, a hello-world ASGI app on hypercorn's
trio worker, configured as the gateway configures its listeners (no access log). It reads the body
and answers 201 with a small JSON map, as POS/1 answers a sale, but does nothing else."""
from __future__ import annotations

import logging
import sys

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

ANSWER = b'{"t": "res", "ok": true}'


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 201,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(ANSWER)).encode())]})
    await send({"type": "http.response.body", "body": ANSWER})


def main() -> None:
    config = Config()
    config.bind = [f"127.0.0.1:{int(sys.argv[1])}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hello")
    config.h11_max_incomplete_size = 64 * 1024
    trio.run(serve, app, config)


if __name__ == "__main__":
    main()
