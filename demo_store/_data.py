"""The demo store's master data: a few dozen medical-device items with lots and expiries (some
expiring soon), promotions, members, the opening stock, and the recall issued a minute in.

Made from a seeded generator and today's date, so every demo store looks alike and its expiry
dates mean the same whatever day it runs.
"""
from __future__ import annotations

import datetime
import random
from dataclasses import dataclass, field

ITEMS = [  # name, category, unit price in cents, lot tracked
    ("Glucose test strips 50", "consumable", 1990, True), ("Glucose test strips 100", "consumable", 3590, True),
    ("Lancets 100", "consumable", 690, True), ("Blood glucose meter", "device", 3990, True),
    ("Digital thermometer", "device", 1290, False), ("Infrared ear thermometer", "device", 4990, False),
    ("Blood pressure monitor, upper arm", "device", 6990, True), ("Blood pressure monitor, wrist", "device", 4490, True),
    ("Pulse oximeter", "device", 2990, True), ("Nebulizer", "device", 8990, True),
    ("Sterile gauze pads 10x10", "consumable", 450, True), ("Elastic bandage 8 cm", "consumable", 390, False),
    ("Adhesive plasters, assorted", "consumable", 290, False), ("Wound dressing, hydrocolloid", "consumable", 890, True),
    ("Disposable syringes 5 ml x10", "consumable", 550, True), ("Insulin pen needles 4 mm x100", "consumable", 2490, True),
    ("Nitrile gloves M x100", "consumable", 990, True), ("Surgical masks x50", "consumable", 790, True),
    ("FFP2 masks x10", "consumable", 1490, True), ("Alcohol swabs x100", "consumable", 350, True),
    ("Compression stockings class 2", "orthopedic", 3990, False), ("Knee brace", "orthopedic", 2990, False),
    ("Wrist splint", "orthopedic", 1990, False), ("Cervical collar", "orthopedic", 2490, False),
    ("Walking cane, adjustable", "mobility", 2290, False), ("Forearm crutches (pair)", "mobility", 4490, False),
    ("Hearing aid batteries 312 x6", "consumable", 590, True), ("Pregnancy test x2", "consumable", 890, True),
    ("COVID-19 antigen test x5", "consumable", 1290, True), ("Urine test strips x50", "consumable", 1190, True),
    ("Contact lens solution 360 ml", "consumable", 990, True), ("Saline nasal spray", "consumable", 690, True),
    ("Heating pad", "device", 2990, False), ("TENS unit", "device", 5990, True),
    ("Catheter, intermittent x30", "consumable", 4990, True), ("Ostomy bags x30", "consumable", 5490, True),
]
TIERS = ("silver", "gold", "platinum")
FIRST = ("Wei", "Fang", "Min", "Jing", "Lei", "Yan", "Hui", "Tao", "Ling", "Qiang", "Xiu", "Bo")
LAST = ("Li", "Wang", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Wu", "Zhou")
HIBC_LIC = "H123"
COUPON = "WELCOME10"


def with_check_digit(body: str) -> str:
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(body.zfill(13)))
    return body + str((10 - total % 10) % 10)


@dataclass
class Lot:
    sku: str
    lot: str | None
    expiry: str | None
    qty: int


@dataclass
class MasterData:
    """Everything the demo ERP sends, and what the simulators need to know to sell and scan."""

    today: datetime.date
    catalog: dict
    promotions: dict
    members: dict
    policy: dict
    lots: list[Lot]
    recall: dict
    recalled: Lot
    hibc: dict = field(default_factory=dict)   # sku -> HIBC product code (label + product + unit)

    def items(self) -> list[dict]:
        return self.catalog["items"]

    def item(self, sku: str) -> dict:
        return next(i for i in self.items() if i["sku"] == sku)

    def movements(self) -> dict:
        return {"movements": [{"id": f"GR-OPEN-{i + 1:03d}", "type": "receipt", "sku": lot.sku, "lot": lot.lot,
                               "expiry": lot.expiry, "serials": [], "qty": lot.qty, "reason": "opening stock"}
                              for i, lot in enumerate(self.lots)]}


def build(today: datetime.date, seed: int = 7) -> MasterData:
    rng = random.Random(seed)
    items, lots, hibc = [], [], {}
    for n, (name, category, cents, lot_tracked) in enumerate(ITEMS, start=1):
        sku = f"MD-{n:03d}"
        item = {"sku": sku, "name": name, "gtins": [with_check_digit(f"0695{n:09d}")], "category": category,
                "unit_cents": cents, "lot_tracked": lot_tracked, "serial_tracked": False,
                "reorder_point": rng.choice((3, 5, 8)), "reorder_qty": rng.choice((10, 20, 30)), "active": True,
                "pos_codes": [f"{7000 + n}"]}
        if n % 4 == 0:  # some manufacturers label with HIBC
            hibc[sku] = f"+{HIBC_LIC}P{n:03d}0"
            item["hibc"] = [hibc[sku][1:]]
        items.append(item)
        lots += _opening_lots(rng, sku, lot_tracked, today, low=n % 9 == 0)
    recalled = next(lot for lot in lots if lot.lot is not None and lot.sku == "MD-007")
    return MasterData(today=today, catalog={"items": items}, promotions=_promotions(), members=_members(rng),
                      policy={"negative_stock": "allow", "expiry_warn_days": 30, "points_offline_cap": 500,
                              "points_value_cents": 1},
                      lots=lots, recalled=recalled, hibc=hibc,
                      recall={"recalls": [{"recall_id": f"RC-{today:%Y}-017", "sku": recalled.sku, "lot": recalled.lot,
                                           "reason": "sensor reads high: manufacturer field safety notice"}]})


def _opening_lots(rng, sku: str, lot_tracked: bool, today: datetime.date, *, low: bool) -> list[Lot]:
    if not lot_tracked:
        return [Lot(sku, None, None, 2 if low else rng.randint(12, 40))]
    out = []
    for i in range(rng.choice((2, 3))):
        # The first lot of a few items expires within the warning window: the page shows them.
        days = rng.randint(8, 25) if i == 0 and rng.random() < 0.3 else rng.randint(120, 900)
        expiry = (today + datetime.timedelta(days=days)).isoformat()
        out.append(Lot(sku, f"{sku[-3:]}{chr(65 + i)}{rng.randint(100, 999)}", expiry,
                       1 if low else rng.randint(6, 30)))
    return out


def _members(rng) -> dict:
    return {"mode": "full", "members": [
        {"id": f"M{n:05d}", "tier": rng.choice(TIERS), "points": rng.randint(0, 2000),
         "name": f"{rng.choice(LAST)} {rng.choice(FIRST)}"} for n in range(1, 41)]}


def _promotions() -> dict:
    return {"ceiling": {"default_max_pct_bp": 3000, "by_category": {"consumable": 5000}},
            "points": {"earn_per_cents": 100, "earn_points": 1,
                       "tier_multiplier_bp": {"silver": 10000, "gold": 15000, "platinum": 20000}},
            "rules": [
                {"id": "STRIPS-3FOR2", "version": 1, "name": "Test strips: 3 for 2", "kind": "buy_x_get_y",
                 "params": {"buy": 2, "get": 1, "pct_bp": 10000, "max_applications": 5},
                 "target": {"skus": ["MD-001", "MD-002"]}, "priority": 10},
                {"id": "MEMBERS-ORTHO", "version": 1, "name": "Members: 10% off orthopedics", "kind": "percent_off",
                 "params": {"pct_bp": 1000}, "target": {"categories": ["orthopedic"]}, "who": {"members_only": True},
                 "priority": 5},
                {"id": "WELCOME10", "version": 1, "name": "Coupon: 10% off the basket", "kind": "order_percent_off",
                 "params": {"pct_bp": 1000, "min_cents": 2000}, "coupon": COUPON},
            ]}
