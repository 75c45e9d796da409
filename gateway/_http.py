"""Serving an ASGI app with hypercorn's trio worker: the one place HTTP listeners are set up."""
from __future__ import annotations

import logging

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from core_ext import limits

from ._tls import TlsConfig, configure as configure_tls, with_tls_extension


def hypercorn_config(listen: str, *, certfile: str = "", keyfile: str = "", client_ca: str = "") -> HypercornConfig:
    config = TlsConfig()
    config.bind = [listen]
    config.accesslog = None
    config.errorlog = logging.getLogger("gateway.http")
    # Bodies are bounded by each app (POS/1 and UP/1 refuse what is too large with 413 themselves).
    # A header block still arriving is cut off here (431); h11 lets one that came whole in a single
    # read through whatever its size and counts no fields, so every app checks both again on what
    # was parsed (`core_ext._asgi.header_problem`).
    config.h11_max_incomplete_size = limits.MAX_HEADER_BYTES
    config.h2_max_header_list_size = limits.MAX_HEADER_BYTES
    config.graceful_timeout = 2.0
    if certfile and keyfile:
        configure_tls(config, certfile=certfile, keyfile=keyfile, client_ca=client_ca)
    return config


async def serve_asgi(app, listen: str, *, certfile: str = "", keyfile: str = "", client_ca: str = "",
                     task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve `app` on `listen` ("host:port"; port 0 picks a free one) until cancelled.

    With `certfile` and `keyfile`: HTTPS, each request's scope carrying the ASGI TLS extension;
    with `client_ca` too, only clients whose certificate that CA signed get through the handshake.
    `task_status.started()` receives the bound URLs, e.g. `["http://127.0.0.1:8600"]`.
    """
    config = hypercorn_config(listen, certfile=certfile, keyfile=keyfile, client_ca=client_ca)
    if config.ssl_enabled:
        app = with_tls_extension(app)
    await serve(app, config, task_status=task_status, mode="asgi")
