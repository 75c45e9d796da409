"""The client certificate of a request, as the ASGI TLS extension carries it.

`scope["extensions"]["tls"]["client_cert_chain"]` lists PEM certificates, the client's own first
(ASGI TLS extension 0.2). Present only on TLS connections where the client sent a certificate the
server verified; an app that requires one treats its absence as no certificate at all.
"""
from __future__ import annotations

import functools


def client_certificate(scope) -> str | None:
    """The PEM of the verified client certificate of this request's connection, or None."""
    tls = (scope.get("extensions") or {}).get("tls")
    if not isinstance(tls, dict):
        return None
    chain = tls.get("client_cert_chain") or ()
    return chain[0] if chain else None


@functools.lru_cache(maxsize=256)
def common_name(pem: str) -> str:
    """The subject's common name (CN) of a PEM certificate ("" when it has none)."""
    from cryptography import x509  # only listeners with client certificates need it
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificate(pem.encode("ascii"))
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else ""
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def client_common_name(scope) -> str | None:
    """The CN of the request's client certificate; None when the connection carries none."""
    pem = client_certificate(scope)
    return None if pem is None else common_name(pem)
