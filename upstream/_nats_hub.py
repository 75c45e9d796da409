"""The asyncio side of NATS/1: one nats-py connection and the few JetStream calls the link makes.

Everything here runs on the bridge's asyncio thread (`_nats_bridge.AsyncioThread`) and turns nats-py's
exceptions into this package's own (`HubUnavailable`, `WrongLastSequence`), so the trio side never
imports nats. Nothing here touches the store.
"""
from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field

import nats
import nats.errors
import nats.js.errors
from nats.js import api

from ._envelope import UpstreamError

log = logging.getLogger("gateway.upstream.nats")

MSG_ID = "Nats-Msg-Id"
EXPECTED_LAST_SUBJECT_SEQUENCE = "Nats-Expected-Last-Subject-Sequence"
# JetStream's error code for a refused Nats-Expected-Last-Subject-Sequence ("wrong last sequence: N").
ERR_WRONG_LAST_SEQUENCE = 10071
ERR_STREAM_NOT_FOUND = 10059
ERR_NO_MESSAGE_FOUND = 10037


class HubUnavailable(UpstreamError):
    """The hub did not answer, or answered with an error worth trying again later."""


class WrongLastSequence(UpstreamError):
    """The stream refused a publish: this store's last message there is not the one the gateway named."""


@dataclass(frozen=True, slots=True)
class HubSettings:
    """How to reach the hub: the [nats] section's connection keys."""

    servers: tuple = ()
    token: str = ""
    creds: str = ""
    tls_ca: str = ""
    name: str = "gateway"
    request_timeout_s: float = 5.0
    reconnect_wait_s: float = 1.0


@dataclass(frozen=True, slots=True)
class LastMessage:
    """A subject's last message in a stream: its stream sequence, headers and payload."""

    stream_seq: int
    headers: dict = field(default_factory=dict)
    data: bytes = b""


class Hub:
    """One connection to the hub, made on first use and kept (nats-py reconnects by itself)."""

    def __init__(self, settings: HubSettings):
        self.settings = settings
        self.nc = None
        self.js = None
        self._lock: asyncio.Lock | None = None

    @property
    def connected(self) -> bool:
        nc = self.nc
        return bool(nc is not None and nc.is_connected)

    async def connect(self) -> None:
        """Connect unless connected (or reconnecting: nats-py keeps trying on its own)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.nc is not None and not self.nc.is_closed:
                return
            s = self.settings
            options = {"servers": list(s.servers), "name": s.name, "connect_timeout": 2,
                       "reconnect_time_wait": s.reconnect_wait_s, "max_reconnect_attempts": 1,
                       "allow_reconnect": True, "error_cb": _log_error}
            if s.token:
                options["token"] = s.token
            if s.creds:
                options["user_credentials"] = s.creds
            if s.tls_ca or any(str(u).startswith("tls://") for u in s.servers):
                options["tls"] = ssl.create_default_context(cafile=s.tls_ca or None)
            try:
                self.nc = await nats.connect(**options)
            except (OSError, asyncio.TimeoutError, nats.errors.Error) as exc:
                raise HubUnavailable(f"cannot connect to {', '.join(s.servers)}: {exc!r}") from None
            # The first connect tries each server once (so a hub that is down is reported and retried
            # by the link's own backoff); once connected, nats-py reconnects for ever on its own.
            self.nc.options["max_reconnect_attempts"] = -1
            self.js = self.nc.jetstream(timeout=s.request_timeout_s)

    async def close(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            try:
                await self.nc.close()
            except (OSError, nats.errors.Error):
                pass

    async def publish(self, subject: str, payload: bytes, headers: dict) -> api.PubAck:
        """Publish to JetStream and return its acknowledgement (`seq`, `duplicate`)."""
        await self.connect()
        try:
            return await self.js.publish(subject, payload, headers=dict(headers))
        except nats.js.errors.APIError as exc:
            if exc.err_code == ERR_WRONG_LAST_SEQUENCE:
                raise WrongLastSequence(str(exc.description)) from None
            raise HubUnavailable(f"publish to {subject}: {exc}") from None
        except (nats.errors.Error, asyncio.TimeoutError, OSError) as exc:
            raise HubUnavailable(f"publish to {subject}: {exc!r}") from None

    async def stream_of(self, subject: str) -> str:
        """The name of the stream that takes `subject`."""
        await self.connect()
        try:
            return await self.js.find_stream_name_by_subject(subject)
        except nats.js.errors.NotFoundError:
            raise HubUnavailable(f"no stream takes {subject}: the chain has not created it yet") from None
        except (nats.errors.Error, asyncio.TimeoutError, OSError) as exc:
            raise HubUnavailable(f"finding the stream of {subject}: {exc!r}") from None

    async def last_message(self, subject: str) -> LastMessage | None:
        """The last message on `subject` in its stream, or None when the stream holds none."""
        stream = await self.stream_of(subject)
        try:
            msg = await self.js.get_last_msg(stream, subject)
        except nats.js.errors.NotFoundError:
            return None
        except nats.js.errors.APIError as exc:
            if exc.err_code == ERR_NO_MESSAGE_FOUND:
                return None
            raise HubUnavailable(f"reading the last message of {subject}: {exc}") from None
        except (nats.errors.Error, asyncio.TimeoutError, OSError) as exc:
            raise HubUnavailable(f"reading the last message of {subject}: {exc!r}") from None
        return LastMessage(msg.seq, dict(msg.headers or {}), msg.data or b"")

    async def pull_subscribe(self, stream_subject: str, durable: str, filters: list[str],
                             ack_wait_s: float = 30.0, max_ack_pending: int = 256):
        """A pull subscription bound to the durable consumer `durable` (made when missing)."""
        stream = await self.stream_of(stream_subject)
        config = api.ConsumerConfig(durable_name=durable, filter_subjects=list(filters),
                                    ack_policy=api.AckPolicy.EXPLICIT, deliver_policy=api.DeliverPolicy.ALL,
                                    ack_wait=ack_wait_s, max_ack_pending=max_ack_pending)
        try:
            return await self.js.pull_subscribe("", durable=durable, stream=stream, config=config)
        except (nats.errors.Error, asyncio.TimeoutError, OSError) as exc:
            raise HubUnavailable(f"binding consumer {durable} on {stream}: {exc!r}") from None

    @staticmethod
    async def fetch(sub, batch: int, timeout_s: float) -> list:
        """Up to `batch` messages, waiting at most `timeout_s` for the first; [] when none came."""
        try:
            return await sub.fetch(batch, timeout=timeout_s)
        except (nats.errors.TimeoutError, asyncio.TimeoutError):
            return []
        except nats.js.errors.NotFoundError as exc:
            raise HubUnavailable(f"the consumer is gone: {exc}") from None
        except (nats.errors.Error, asyncio.TimeoutError, OSError) as exc:
            raise HubUnavailable(f"fetching: {exc!r}") from None

    @staticmethod
    async def ack(msg) -> None:
        try:
            await msg.ack()
        except (nats.errors.Error, OSError) as exc:
            # Not acknowledged: JetStream delivers it again and the version or movement id makes it a no-op.
            raise HubUnavailable(f"acknowledging {msg.subject}: {exc!r}") from None

    @staticmethod
    async def nak(msg, delay_s: float) -> None:
        try:
            await msg.nak(delay=delay_s)
        except (nats.errors.Error, OSError) as exc:
            raise HubUnavailable(f"refusing {msg.subject} for now: {exc!r}") from None


async def _log_error(exc) -> None:
    log.info("NATS connection: %r", exc)
