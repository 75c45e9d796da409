"""The one exception tree of the core: every refusal carries a stable code and words for a person."""

# The stable codes of ECR/1 (shared/spec/ecr-serial.md), reused by POS/1 and UP/1.
BAD_REQUEST = "BAD_REQUEST"
UNKNOWN_ITEM = "UNKNOWN_ITEM"
RECALLED_LOT = "RECALLED_LOT"
EXPIRED_LOT = "EXPIRED_LOT"
INSUFFICIENT_STOCK = "INSUFFICIENT_STOCK"
PAYMENT_MISMATCH = "PAYMENT_MISMATCH"
POINTS_INSUFFICIENT = "POINTS_INSUFFICIENT"
UNKNOWN_SALE = "UNKNOWN_SALE"
RETURN_EXCEEDS_SALE = "RETURN_EXCEEDS_SALE"
DUPLICATE_ID_CONFLICT = "DUPLICATE_ID_CONFLICT"
UNAVAILABLE = "UNAVAILABLE"

# Alert kinds of a sale recorded as it happened (a legacy POS file, scanners-and-files.md): the goods
# are gone already, so the ledger records the sale and raises these, naming the file, basket and lot.
RECALLED_LOT_SOLD = "RECALLED_LOT_SOLD"
EXPIRED_LOT_SOLD = "EXPIRED_LOT_SOLD"


class GatewayError(Exception):
    """Base of every error the core raises on purpose."""


class Refused(GatewayError):
    """A request refused for a reason the sender should hear; it changed nothing.

    `record` is an optional document to append to the ledger anyway (a `refusal` that matters for
    compliance, such as a recalled lot offered for sale): it is written in its own transaction after
    the refused request's effects were rolled back.
    """

    def __init__(self, code: str, message: str, *, record: dict | None = None, details=None):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.record = record
        self.details = details


class StoreError(GatewayError):
    """The store cannot be opened or is not what this version expects."""


def bad_request(message: str) -> Refused:
    """A `BAD_REQUEST` refusal: a field missing, of the wrong type, or out of range."""
    return Refused(BAD_REQUEST, message)
