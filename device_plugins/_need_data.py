"""The sentinel every sans-io protocol's `next_event()` returns when it needs more bytes (as in h11)."""


class _NeedData:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()
