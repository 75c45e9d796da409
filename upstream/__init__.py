"""UP/1, the ERP-facing upstream: signed and chained batches up, signed master data and movements down.

The composition root wires it: `make_handlers` into the core loop, `run_sealer` (and `run_push` when a
push URL is configured) as tasks, `make_app` served on the upstream listener.
"""
from ._api import make_app
from ._envelope import (
    DocumentError, EnvelopeError, UpstreamError, ZERO_DIGEST, decode_body, decode_envelope, digest,
    document_signed_bytes, encode_envelope, seal_envelope, sign_document, signed_bytes, verify_document,
    verify_envelope,
)
from ._erp_client import ChainVerifier, ErpClient, ErpError, pull
from ._handlers import STATUS, make_handlers, next_activation_ms, read_next_activation
from ._keys import KeyFileError, load_private_key, load_public_key, raw_public_key, write_keypair
from ._metrics import Metrics, disk_pressure
from ._push import run_push
from ._sources import HOUSEKEEPING_SOURCES
from ._sealer import Backlog, BacklogReader, SealSignal, Settings, read_backlog, run_master_activation, run_sealer

__all__ = [
    "make_app", "DocumentError", "EnvelopeError", "UpstreamError", "ZERO_DIGEST", "decode_body",
    "decode_envelope", "digest", "document_signed_bytes", "encode_envelope", "seal_envelope", "sign_document",
    "signed_bytes", "verify_document", "verify_envelope", "ChainVerifier", "ErpClient", "ErpError", "pull",
    "STATUS", "make_handlers", "next_activation_ms", "read_next_activation", "KeyFileError",
    "load_private_key", "load_public_key", "raw_public_key", "write_keypair", "Metrics", "disk_pressure",
    "run_push", "HOUSEKEEPING_SOURCES", "Backlog", "BacklogReader", "SealSignal", "Settings", "read_backlog", "run_master_activation", "run_sealer",
]
