"""The demo's live summary: a few lines, redrawn in place on a terminal (printed once at the end
when the output is not a terminal, so a log or a test reads it whole)."""
from __future__ import annotations

from ._actors import Tally


def summary_lines(tally: Tally, alerts: dict) -> list[str]:
    lanes = sorted(set(tally.sales) | set(tally.refused) | set(tally.returns))
    lines = ["-- live store " + "-" * 50]
    for lane in lanes:
        lines.append(f"  {lane:8} sales {tally.sales[lane]:5}   refused {tally.refused[lane]:4}   "
                     f"returns {tally.returns[lane]:4}")
    codes = ", ".join(f"{code} {n}" for code, n in sorted(tally.refusals.items())) or "none"
    lines.append(f"  refusals by reason: {codes}")
    lines.append(f"  receiving scans {tally.scans}   legacy POS files {tally.files_done} sent, "
                 f"{tally.files_bad} with a bad row")
    counts = {kind: len(alerts.get(kind, ())) for kind in ("low_stock", "expiring", "recalled")}
    lines.append(f"  alerts: low stock {counts['low_stock']}, expiring {counts['expiring']}, "
                 f"recalled on hand {counts['recalled']}   recall {'issued' if tally.recall_issued else 'not yet'}")
    lines.append(f"  ERP: batches verified {tally.batches_verified}, acknowledged through {tally.acked}, "
                 f"documents {tally.erp_docs}")
    if tally.errors:
        lines.append(f"  problems: {len(tally.errors)} (last: {tally.errors[-1]})")
    return lines


class Screen:
    """Redraws the summary over itself on a terminal."""

    def __init__(self, out):
        self.out = out
        self.live = hasattr(out, "isatty") and out.isatty()
        self.drawn = 0
        self.last: list[str] = []

    def show(self, lines: list[str]) -> None:
        self.last = lines
        if not self.live:
            return
        # Up over what was drawn, clear to the end of the screen, draw again.
        self.out.write((f"\x1b[{self.drawn}F" if self.drawn else "") + "\x1b[J" + "\n".join(lines) + "\n")
        self.out.flush()
        self.drawn = len(lines)

    def final(self) -> None:
        if not self.live and self.last:
            self.out.write("\n".join(self.last) + "\n")
            self.out.flush()
