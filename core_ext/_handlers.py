"""The request kinds the core answers, with whether each remembers its id (a repeat is a replay)."""
from . import _csv_files, _days, _queries, _sale_returns, _sales, _stock

# The ECR/1 messages: each must carry an id, remembered or not (ecr-serial.md, Messages).
ECR_KINDS = frozenset({"quote", "sale", "return", "member", "stock", "ping", "drawer_count"})

# kind -> (handler, idempotent)
HANDLERS = {
    "quote": (_sales.handle_quote, False),
    "sale": (_sales.HANDLE_SALE, True),
    "return": (_sale_returns.handle_return, True),
    "member": (_queries.handle_member, False),
    "stock": (_queries.handle_stock, False),
    "ping": (_queries.handle_ping, False),
    "drawer_count": (_days.handle_drawer_count, True),
    # The business day's close: the timer's (days that ended) and the ERP's (the current day, early).
    "day_close": (_days.handle_day_close, False),
    "receipt": (_stock.handle_receipt, True),
    "scan": (_stock.handle_scan, True),
    "count_close": (_stock.handle_count_close, True),
    "lane_basket": (_stock.handle_lane_basket, False),
    "alerts_refresh": (_stock.handle_alerts_refresh, False),
    # A legacy POS file: checked (reads only), then applied slice by slice (its progress in `files`).
    "csv_check": (_csv_files.handle_csv_check, False),
    "csv_slice": (_csv_files.handle_csv_slice, False),
}

# Kinds whose handler refuses only before it writes anything (parse, decide, then persist): each runs
# in its group's transaction itself rather than a nested one (`Tx.child(shared=True)`). Should one
# fail after writing all the same, its group is rolled back whole and answered so.
DECIDES_FIRST = frozenset({"sale"})
