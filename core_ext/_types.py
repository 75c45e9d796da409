"""Requests into the core loop and the responses out of it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Awaitable, Callable

# Channels as the promotion rules' `where.channels` name them, plus the non-sale sources.
CHANNELS = ("ecr", "pos", "csv", "scanner", "erp", "internal")


@dataclass(frozen=True, slots=True)
class Request:
    """One unit of work for the single writer.

    `kind` picks the handler (`sale`, `quote`, `seal`, ...); `body` is the message as the device or
    API sent it (for ECR/1 kinds, the ECR/1 map); `source` is the device or terminal name that
    prefixes committed ids upstream; `channel` is what promotion rules match on.

    `applied`, if given, is called from the writer's thread once the group holding the request has
    been applied, as its commit begins to write and sync (the answer still waits for the commit): a
    device may get its next request ready meanwhile, while the writer holds no interpreter lock.
    """

    kind: str
    body: dict
    source: str = ""
    channel: str = "internal"
    applied: Callable[[], None] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Response:
    """The answer to a request, sent only after its effects are durable.

    `body` is the ECR/1-shaped map (`ok`, and `err`/`msg` on refusal); `replayed` says that the
    request id had already been committed and this is the first response again.
    """

    body: dict
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return bool(self.body.get("ok"))


Submit = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Settings:
    """The store facts handlers need from the configuration."""

    store_id: str = "S001"
    timezone: str = "UTC"
    day_starts_at: str = "00:00"  # local time at which the business day turns (CLOSE/1)


def is_int(value) -> bool:
    """An integer that is not a bool (MessagePack and JSON both give bools that `isinstance(int)` accepts)."""
    return isinstance(value, int) and not isinstance(value, bool)
