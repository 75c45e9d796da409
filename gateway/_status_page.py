"""The status page for the store manager and the field technician: `/status` (HTML that reads well on
a phone and refreshes itself) and `/status.json` (the same snapshot, for tools), on the metrics listener.

Behind `metrics.page_token`: the first visit brings `?token=...`, answered with a cookie and a
redirect to the bare path (so the token leaves the address bar and the history); later visits
bring the cookie, tools may send `Authorization: Bearer`. Without either: 401. The cookie holds a
digest of the token, never the token itself, and the page shows no token, key or member data.
"""
from __future__ import annotations

import hashlib
import hmac
import html
import json
import time
import urllib.parse
from datetime import datetime, timezone as dt_timezone
from zoneinfo import ZoneInfo

import trio

from core_ext import tokens
from core_ext._asgi import respond

PAGE, JSON_PATH = "/status", "/status.json"
PATHS = (PAGE, JSON_PATH)
COOKIE = "gw_status"
REFRESH_S = 10


def cookie_value(token: str) -> str:
    """What the cookie carries: proof of the token (as configured: itself or `sha256:<hex>` of it),
    from which the token cannot be read back."""
    return hmac.new(tokens.digest_of(token), b"gateway status page", hashlib.sha256).hexdigest()


def _cookies(scope) -> dict:
    out = {}
    for key, value in scope.get("headers", ()):
        if key.lower() == b"cookie":
            for part in value.decode("latin-1").split(";"):
                name, _, val = part.strip().partition("=")
                out[name] = val
    return out


def _bearer(scope) -> str:
    for key, value in scope.get("headers", ()):
        if key.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                return token.strip()
    return ""


def make_handler(token: str, read_snapshot, *, count=lambda reason: None):
    """`handle(scope, send)` for the page's two paths; `read_snapshot()` (blocking) reads the store."""
    return StatusPage(token, read_snapshot, count)


class StatusPage:
    """The page's two paths, in layers: a page at all (a token configured), the method, the token
    (a first visit's `?token=`, the cookie or a bearer), then the snapshot as HTML or JSON."""

    def __init__(self, token: str, read_snapshot, count):
        self.token = token
        self.read_snapshot = read_snapshot
        self.count = count
        self.expected = cookie_value(token) if token else ""
        # The page's token, as every app checks one: by digest, in constant time.
        self.tokens = tokens.TokenTable({"page": token})

    async def __call__(self, scope, send) -> None:
        method = scope["method"]
        if not self.token:
            self.count("not_found")
            await respond(send, 404, "text/plain; charset=utf-8",
                          b"no status page: set metrics.page_token in the configuration\n", head=method == "HEAD")
            return
        if method not in ("GET", "HEAD"):
            self.count("method_not_allowed")
            await respond(send, 405, "text/plain; charset=utf-8", b"only GET and HEAD\n",
                          extra=[(b"allow", b"GET, HEAD")])
            return
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given = (query.get("token") or [""])[0]
        if given:
            await self._sign_in(scope, send, given)
        elif self._allowed(scope):
            await self._show(scope, send)
        else:
            self.count("unauthorized")
            await _unauthorized(send, method)

    async def _sign_in(self, scope, send, given: str) -> None:
        """A first visit's `?token=`: the cookie, and a redirect that takes the token out of the
        address bar and the history."""
        method = scope["method"]
        if not self._is_token(given):
            self.count("unauthorized")
            await _unauthorized(send, method)
            return
        cookie = f"{COOKIE}={self.expected}; Path=/; HttpOnly; SameSite=Strict; Max-Age=31536000"
        await respond(send, 303, "text/plain; charset=utf-8", b"signed in\n", head=method == "HEAD",
                      extra=[(b"location", scope["path"].encode()), (b"set-cookie", cookie.encode())])

    def _allowed(self, scope) -> bool:
        bearer = _bearer(scope)
        return (hmac.compare_digest(_cookies(scope).get(COOKIE, "").encode(), self.expected.encode())
                or bool(bearer) and self._is_token(bearer))

    def _is_token(self, given: str) -> bool:
        return self.tokens.find(given.encode("utf-8", "surrogatepass")) == "page"

    async def _show(self, scope, send) -> None:
        method = scope["method"]
        snap = await trio.to_thread.run_sync(self.read_snapshot)
        if scope["path"] == JSON_PATH:
            body = json.dumps(snap, sort_keys=True, default=str).encode() + b"\n"
            await respond(send, 200, "application/json", body, head=method == "HEAD")
        else:
            await respond(send, 200, "text/html; charset=utf-8", render(snap).encode(), head=method == "HEAD",
                          extra=[(b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer")])


async def _unauthorized(send, method: str) -> None:
    await respond(send, 401, "text/plain; charset=utf-8",
                  b"the status page needs its token: open /status?token=... once\n", head=method == "HEAD")


# --- rendering --------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;margin:0;padding:.5rem;background:#f4f5f7;color:#222}
h1{font-size:1.25rem;margin:.25rem 0}h2{font-size:1rem;margin:0 0 .4rem}
section{background:#fff;border-radius:8px;padding:.6rem .8rem;margin:.5rem 0;box-shadow:0 1px 2px #0002;overflow-x:auto}
h3{font-size:.9rem;margin:.5rem 0 .2rem;color:#444}
table{border-collapse:collapse;width:100%;font-size:.9rem}td,th{text-align:left;padding:.2rem .4rem;
border-bottom:1px solid #eee}th{color:#666;font-weight:600}.num{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:#b00020;font-weight:600}.warn{color:#a15c00}.ok{color:#17702e}.muted{color:#777}
@media(min-width:900px){main{display:grid;grid-template-columns:1fr 1fr;gap:.5rem}section{margin:0}}
"""


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def money(cents) -> str:
    cents = int(cents or 0)
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(cents) // 100:,}.{abs(cents) % 100:02d}"


def age(ms, now_ms: int) -> str:
    """'12 s ago', '3 min ago', 'never'."""
    if ms is None:
        return "never"
    s = max(0, (now_ms - ms) // 1000)
    if s < 120:
        return f"{s} s ago"
    if s < 7200:
        return f"{s // 60} min ago"
    if s < 172800:
        return f"{s // 3600} h ago"
    return f"{s // 86400} days ago"


def clock(ms, tz: str) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, dt_timezone.utc).astimezone(ZoneInfo(tz)).strftime("%Y-%m-%d %H:%M:%S")


def duration(seconds) -> str:
    if seconds is None:
        return "-"
    d, rest = divmod(int(seconds), 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return (f"{d} d " if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


def _table(head: list[str], rows: list[list], *, empty: str, nums=()) -> str:
    if not rows:
        return f'<p class="muted">{_e(empty)}</p>'
    th = "".join(f'<th class="num">{_e(h)}</th>' if i in nums else f"<th>{_e(h)}</th>" for i, h in enumerate(head))
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in nums else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _facts(section: str, title: str, rows: list[tuple[str, str, str]]) -> str:
    """A section of (label, HTML, class of the value) rows."""
    cells = []
    for label, value, cls in rows:
        attr = f' class="{cls}"' if cls else ""
        cells.append(f"<tr><th>{label}</th><td{attr}>{value}</td></tr>")
    return f'<section id="{section}"><h2>{title}</h2><table>{"".join(cells)}</table></section>'


def _store(s: dict) -> str:
    st, ledger = s["store"], s["ledger"]
    return _facts("store", "Store", [
        ("store", _e(st["id"]), ""),
        ("version", _e(st["version"]), ""),
        ("uptime", _e(duration(st["uptime_s"])), ""),
        ("local time", f'{_e(clock(st["now_ms"], st["timezone"]))} ({_e(st["timezone"])})', ""),
        ("events", f'{ledger["events"]:,} (last {_e(age(ledger["last_event_ms"], st["now_ms"]))})', "")])


def _devices(s: dict) -> str:
    now = s["store"]["now_ms"]
    rows = [[_e(d["name"]), _e(d["kind"]),
             f'<span class="{"bad" if d["state"] == "disconnected" else "ok"}">{_e(d["state"])}</span>',
             _e(age(d["last_activity_ms"], now))] for d in s["devices"]]
    return ('<section id="devices"><h2>Devices</h2>'
            + _table(["device", "kind", "state", "last activity"], rows, empty="no device configured") + "</section>")


def _sales(s: dict) -> str:
    sales = s["sales"]
    lanes = [[_e(name), l["sales"], money(l["sales_cents"]), l["returns"], money(l["refund_cents"]), l["refusals"]]
             for name, l in sales["lanes"].items()]
    pay = [[_e(method), money(cents)] for method, cents in sales["payments"].items()]
    return (f'<section id="sales"><h2>Sales today ({_e(sales["day"])})</h2>'
            f'<p><b>{sales["sales"]}</b> sales, <b>{money(sales["sales_cents"])}</b>; '
            f'refunds {money(sales["refund_cents"])}</p>'
            + _table(["lane", "sales", "amount", "returns", "refunds", "refused"], lanes,
                     empty="no sale yet today", nums=(1, 2, 3, 4, 5))
            + _table(["payment", "amount"], pay, empty="", nums=(1,)) + "</section>")


def _alerts(s: dict) -> str:
    a = s["alerts"]
    low = [[_e(x["sku"]), _e(x["name"]), x.get("on_hand"), x.get("reorder_point"), f'<b>{x.get("suggested_qty")}</b>']
           for x in a.get("low_stock", [])]
    exp = [[_e(x["sku"]), _e(x["lot"]), _e(x.get("expiry")), x.get("days_left"), x.get("qty")]
           for x in a.get("expiring", [])]
    rec = [[f'<span class="bad">{_e(x["sku"])}</span>', _e(x["lot"]), x.get("qty"), _e(x.get("recall_id"))]
           for x in a.get("recalled", [])]
    return ('<section id="alerts"><h2>Stock alerts</h2><h3>Low stock: reorder</h3>'
            + _table(["SKU", "item", "on hand", "reorder point", "suggested"], low, empty="none", nums=(2, 3, 4))
            + "<h3>Expiring soon</h3>"
            + _table(["SKU", "lot", "expiry", "days left", "on hand"], exp, empty="none", nums=(3, 4))
            + "<h3>Recalled, still on hand</h3>"
            + _table(["SKU", "lot", "on hand", "recall"], rec, empty="none", nums=(2,)) + "</section>")


def _batches(s: dict) -> str:
    b, now = s["batches"], s["store"]["now_ms"]
    cls = "warn" if b["unacked_batches"] > 10 else "ok"
    return _facts("batches", "Batches to the ERP", [
        ("sealed", f'{b["sealed"]} (last {_e(age(b["last_sealed_ms"], now))})', ""),
        ("acknowledged", f'{b["acked"]}', ""),
        ("not yet acknowledged", f'{b["unacked_batches"]} batches', cls),
        ("events waiting to be sealed", f'{b["backlog_events"]}', ""),
        ("last ERP pull", _e(age(b["last_pull_ms"], now)), ""),
        ("last acknowledgement", _e(age(b["last_ack_ms"], now)), "")])


def _master(s: dict) -> str:
    tz = s["store"]["timezone"]
    rows = []
    for kind, m in sorted(s["master"].items()):
        waiting = ", ".join(f'v{p["version"]} from {clock(p["effective_ms"], tz)}' for p in m["pending"]) or "-"
        rows.append([_e(kind), m["version"], _e(clock(m["effective_ms"] or m["issued_ms"], tz)), _e(waiting)])
    return ('<section id="master"><h2>Master data</h2>'
            + _table(["kind", "in force", "since", "waiting"], rows, empty="none received yet", nums=(1,))
            + "</section>")


def _refusals(s: dict) -> str:
    tz = s["store"]["timezone"]
    rows = [[_e(clock(r["ts_ms"], tz)), _e(r["source"]), f'<span class="bad">{_e(r["err"])}</span>', _e(r["sku"]),
             _e(r["lot"]), _e(r.get("recall_id") or r.get("expiry"))] for r in s["refusals"]]
    return ('<section id="refusals"><h2>Latest refusals</h2>'
            + _table(["when", "lane", "why", "SKU", "lot", "recall / expiry"], rows, empty="none") + "</section>")


def render(s: dict) -> str:
    """The page: server-rendered, no script, refreshing itself every REFRESH_S seconds."""
    parts = "".join(f(s) for f in (_store, _devices, _sales, _alerts, _batches, _master, _refusals))
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<meta http-equiv=\"refresh\" content=\"{REFRESH_S}\">"
            f"<title>Store {_e(s['store']['id'])}: status</title><style>{_CSS}</style></head><body>"
            f"<h1>Store {_e(s['store']['id'])} <span class=\"muted\">updated "
            f"{_e(clock(s['store']['now_ms'], s['store']['timezone']))}</span></h1>"
            f"<main>{parts}</main></body></html>")


def now_ms() -> int:
    return int(time.time() * 1000)
