"""ECR/1 POS terminals on a serial line (shared/spec/ecr-serial.md).

`serve(device, submit, metrics)` is the trio task for one terminal; `EcrConnection` is the link layer
without I/O; `Metrics(registry)` holds the plugin's counters.
"""
from ._events import (
    NEED_DATA, Ack, AckTimeout, ConnectionClosed, Dropped, FrameRejected, GarbageSkipped, LinkError,
    Message, Nak,
)
from ._metrics import Metrics
from ._protocol import MAX_LEN, EcrConnection, EcrProtocolError, crc16, decode_body, encode_frame
from ._task import REQUEST_TYPES, serve

__all__ = [
    "NEED_DATA", "Ack", "AckTimeout", "ConnectionClosed", "Dropped", "FrameRejected", "GarbageSkipped",
    "LinkError", "Message", "Nak", "Metrics", "MAX_LEN", "EcrConnection", "EcrProtocolError", "crc16",
    "decode_body", "encode_frame", "REQUEST_TYPES", "serve",
]
