"""The people and machines of the demo store: two lanes selling, a receiving scanner, a legacy POS
dropping files. Each is one trio task; blocking serial calls run in a worker thread.
"""
from __future__ import annotations

import datetime
import functools
import os
import random
from collections import Counter
from dataclasses import dataclass, field

import serial
import trio

from ._data import COUPON, MasterData
from ._terminal import Terminal, TerminalError

HIBC_TABLE = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-. $/+%"


@dataclass
class Tally:
    """What the simulators saw, for the live summary."""

    sales: Counter = field(default_factory=Counter)          # lane -> sales accepted
    refused: Counter = field(default_factory=Counter)        # lane -> sales refused
    refusals: Counter = field(default_factory=Counter)       # error code -> count
    returns: Counter = field(default_factory=Counter)        # lane -> returns
    scans: int = 0
    files_done: int = 0
    files_bad: int = 0
    recall_issued: bool = False
    batches_verified: int = 0
    acked: int = 0
    erp_docs: int = 0
    errors: list = field(default_factory=list)


async def blocking(fn, *args, **kwargs):
    """A blocking call (pyserial, http.client) in a worker thread that Ctrl-C need not wait for."""
    return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), abandon_on_cancel=True)


class Lane:
    """A till selling realistic baskets over ECR/1: members, coupons, a return now and then, and
    once the recall is out, the recalled lot offered now and then (and refused)."""

    def __init__(self, name: str, terminal: Terminal, data: MasterData, tally: Tally, *, run_id: str,
                 pace_s: float, rng: random.Random):
        self.name, self.terminal, self.data, self.tally = name, terminal, data, tally
        self.run_id, self.pace_s, self.rng = run_id, pace_s, rng
        self.n = 0
        self.sold: list[tuple[str, dict]] = []  # (sale id, first answered line) for returns
        self.offered_recalled = False

    def next_id(self) -> str:
        self.n += 1
        return f"{self.run_id}-{self.n:05d}"

    async def run(self) -> None:
        while True:
            await trio.sleep(self.rng.uniform(0.4, 1.6) * self.pace_s)
            roll = self.rng.random()
            if roll < 0.08 and self.sold:
                await self.give_back()
            elif self.tally.recall_issued and (roll < 0.2 or not self.offered_recalled):
                # A customer brings the recalled lot to the till soon after the recall (and now and then).
                self.offered_recalled = True
                await self.sell([{"code": self.data.recalled.sku, "qty": 1, "lot": self.data.recalled.lot}])
            else:
                await self.sell(self.basket())

    def basket(self) -> list[dict]:
        lines = []
        for item in self.rng.sample(self.data.items(), self.rng.choice((1, 1, 2, 2, 3, 4))):
            code = self.rng.choice((item["sku"], item["gtins"][0], item["pos_codes"][0]))
            qty = 3 if item["sku"] in ("MD-001", "MD-002") and self.rng.random() < 0.4 else self.rng.choice((1, 1, 1, 2))
            lines.append({"code": code, "qty": qty})
        return lines

    def _extras(self) -> dict:
        extra = {}
        if self.rng.random() < 0.35:
            extra["member"] = self.rng.choice(self.data.members["members"])["id"]
        if self.rng.random() < 0.15:
            extra["coupons"] = [COUPON]
        return extra

    async def request(self, body: dict) -> dict:
        try:
            return (await blocking(self.terminal.request, body))[0]
        except TerminalError as exc:
            self.tally.errors.append(f"{self.name}: {exc}")
            return {"ok": False, "err": "LINK"}

    async def sell(self, lines: list[dict]) -> None:
        sale_id = self.next_id()
        basket = {"id": sale_id, "lane": self.name, "lines": lines, **self._extras()}
        quote = await self.request({**basket, "t": "quote", "id": sale_id + "Q"})
        if quote.get("ok"):
            answer = await self.request({**basket, "t": "sale", "payments": self.payments(quote["total_cents"])})
        else:
            answer = quote  # the terminal shows the refusal; nothing is sent as a sale
            # A refused lot is recorded only when offered for sale: offer it as the cashier would.
            if quote.get("err") in ("RECALLED_LOT", "EXPIRED_LOT"):
                answer = await self.request({**basket, "t": "sale", "payments": [{"method": "cash", "cents": 0}]})
        if answer.get("ok"):
            self.tally.sales[self.name] += 1
            if answer.get("lines"):
                self.sold.append((sale_id, answer["lines"][0]))
        else:
            self.tally.refused[self.name] += 1
            self.tally.refusals[answer.get("err", "?")] += 1

    def payments(self, total: int) -> list[dict]:
        if total > 3000 and self.rng.random() < 0.25:
            cash = total // 3
            return [{"method": "cash", "cents": cash}, {"method": "card", "cents": total - cash}]
        return [{"method": self.rng.choice(("cash", "card", "card", "insurance")), "cents": total}]

    async def give_back(self) -> None:
        sale_id, line = self.sold.pop(self.rng.randrange(len(self.sold)))
        allocations = line.get("allocations") or [{}]
        answer = await self.request({"t": "return", "id": self.next_id() + "R", "orig": sale_id,
                                     "lines": [{"sku": line["sku"], "qty": 1, "lot": allocations[0].get("lot")}],
                                     "reason": self.rng.choice(("defect", "wrong size", "changed mind"))})
        if answer.get("ok"):
            self.tally.returns[self.name] += 1
        else:
            self.tally.refusals[answer.get("err", "?")] += 1


def gs1_scan(gtin: str, lot: str, expiry: str) -> bytes:
    """A GS1 DataMatrix as a scanner sends it: symbology id, GTIN, expiry, lot (last: no separator)."""
    yymmdd = expiry[2:4] + expiry[5:7] + expiry[8:10]
    return f"]d201{gtin}17{yymmdd}10{lot}".encode()


def hibc_scan(primary: str, lot: str, expiry: str) -> bytes:
    """An HIBC concatenated symbol: primary, then `$$3` + YYMMDD + lot, and the mod-43 check character."""
    data = f"{primary}/$$3{expiry[2:4]}{expiry[5:7]}{expiry[8:10]}{lot}"
    return (data + HIBC_TABLE[sum(HIBC_TABLE.index(c) for c in data) % 43]).encode()


async def receiving(port: serial.Serial, data: MasterData, tally: Tally, *, run_id: str, pace_s: float,
                    rng: random.Random) -> None:
    """The back-room desk: now and then a delivery comes in and each unit is scanned."""
    lot_tracked = [i for i in data.items() if i["lot_tracked"]]
    n = 0
    while True:
        await trio.sleep(rng.uniform(4, 10) * pace_s)
        item = rng.choice(lot_tracked)
        n += 1
        lot = f"D{run_id[-4:].upper()}{n:03d}"
        expiry = (data.today + datetime.timedelta(days=rng.randint(300, 800))).isoformat()
        primary = data.hibc.get(item["sku"])
        code = hibc_scan(primary, lot, expiry) if primary else gs1_scan(item["gtins"][0], lot, expiry)
        for _unit in range(rng.randint(2, 5)):
            await blocking(port.write, code + b"\r\n")
            tally.scans += 1
            await trio.sleep(0.2 * pace_s)


async def legacy_pos(folder: str, data: MasterData, tally: Tally, *, run_id: str, pace_s: float,
                     rng: random.Random) -> None:
    """A legacy POS exporting its tickets as CSV every so often; now and then a file has a bad row."""
    plain = [i for i in data.items() if not i["lot_tracked"]]
    n = 0
    while True:
        await trio.sleep(rng.uniform(6, 14) * pace_s)
        n += 1
        rows = ["TicketNo,ItemCode,Qty,Lot,Expiry"]
        for ticket in range(rng.randint(1, 3)):
            for item in rng.sample(plain, rng.randint(1, 2)):
                rows.append(f"{run_id}{n:03d}{ticket},{item['pos_codes'][0]},{rng.randint(1, 2)},,")
        bad = n % 4 == 2  # every fourth export has a row the gateway does not know
        if bad:
            rows.append(f"{run_id}{n:03d}9,NO-SUCH-ITEM,1,,")
        name = f"export-{run_id}-{n:04d}"
        tmp = os.path.join(folder, name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write("\n".join(rows) + "\n")
        os.replace(tmp, os.path.join(folder, name + ".csv"))  # the POS renames a complete export
        if bad:
            tally.files_bad += 1
        else:
            tally.files_done += 1
