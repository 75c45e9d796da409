"""Store-local time: promotion windows and expiry dates are in the store's timezone."""
from __future__ import annotations

from datetime import date, datetime, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo


@lru_cache(maxsize=16)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def local_datetime(ts_ms: int, tz: str) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, timezone.utc).astimezone(_zone(tz))


@lru_cache(maxsize=64)  # every request of a group shares the group's instant
def local_parts(ts_ms: int, tz: str) -> tuple[int, int, str]:
    """(ISO weekday 1..7, minute of the day 0..1439, ISO date) in the store's timezone."""
    dt = local_datetime(ts_ms, tz)
    return dt.isoweekday(), dt.hour * 60 + dt.minute, dt.date().isoformat()


@lru_cache(maxsize=64)
def today(ts_ms: int, tz: str) -> str:
    return local_datetime(ts_ms, tz).date().isoformat()


def days_between(first_iso: str, second_iso: str) -> int:
    return (date.fromisoformat(second_iso) - date.fromisoformat(first_iso)).days
