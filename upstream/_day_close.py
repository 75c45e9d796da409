"""CLOSE/1 on the ERP side: the routes of UP/1 for the business day, and the reference client's
reconciliation of every pulled `day_close` against the documents of its range.

The recomputation itself is `core_ext.recompute_day`, the one pure function the gateway's own tests
check its running totals against.
"""
from __future__ import annotations

import re

import trio

from core_ext import day_differences, day_report, errors, recompute_day

from ._http_error import HttpError

_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
PREFIX = "/upstream/v1"


async def route(call, through_core, read_store):
    """`POST /day-close {"day"}` (close the current day now) and `GET /day/{day}` (a report), for
    the UP/1 app's `call` (its method, path and body)."""
    if call.path == f"{PREFIX}/day-close":
        call.only("POST")
        request = await call.body()
        if not isinstance(request, dict) or not isinstance(request.get("day"), str) or not _DAY.match(request["day"]):
            raise HttpError(400, errors.BAD_REQUEST, 'the body must be a map {"day": "YYYY-MM-DD"}',
                            edge="malformed_body")
        answer = await through_core("day_close", {"day": request["day"]})
        return {"day": answer["day"], "seq": answer["seq"]}
    call.only("GET")
    day = call.path[len(f"{PREFIX}/day/"):]
    if not _DAY.match(day):
        raise HttpError(400, errors.BAD_REQUEST, "the day in the path must be YYYY-MM-DD", edge="bad_request")

    def read():
        with read_store() as tx:
            return day_report(tx, day)

    report = await trio.to_thread.run_sync(read)
    if report is None:
        raise HttpError(404, "NOT_FOUND", f"business day {day} is neither closed nor the current one")
    return report


class Reconciler:
    """Keeps the documents pulled since the last `day_close` and checks each close against them."""

    def __init__(self):
        self.docs: list = []
        self.first_seq: int | None = None  # the first document this pull saw

    def feed(self, doc: dict) -> list[str] | None:
        """Take one pulled document; for a `day_close`, every difference found (empty: it adds up).

        A close whose range began before this pull's first document cannot be checked: its answer is
        one line saying so, starting with "not checked"."""
        self.docs.append(doc)
        if self.first_seq is None and isinstance(doc.get("seq"), int):
            self.first_seq = doc["seq"]
        if doc.get("type") != "day_close":
            return None
        if self.first_seq is not None and doc.get("from_seq", 0) < self.first_seq:
            self.docs = []
            return [f"not checked: its documents start at {doc.get('from_seq')}, before this pull's first "
                    f"({self.first_seq}); pull from --after 0 or an earlier batch"]
        figures, problems = recompute_day(self.docs, doc)
        found = list(problems)
        for path, said, computed in day_differences(doc, figures):
            found.append(f"{path}: the close says {said!r}, the documents give {computed!r}")
        self.docs = [d for d in self.docs if isinstance(d.get("seq"), int) and d["seq"] > doc.get("to_seq", 0)]
        return found
