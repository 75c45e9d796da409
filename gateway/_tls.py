"""TLS on the gateway's listeners: the files checked, the client certificate handed to the apps.

hypercorn (0.18) terminates TLS and verifies a client certificate against `ca_certs`, but it does
not implement the ASGI TLS extension: the scope says `scheme: "https"` and nothing of the peer's
certificate (hypercorn issues #62 and #324). So the certificate is caught here, where the handshake
happens: the SSL context's `sslobject_class` (a documented hook of the `ssl` module) records the
verified certificate in a context variable of the connection's task. hypercorn spawns each
request's app task from that task, and trio gives a new task a copy of its spawner's context, so
`with_tls_extension` finds the certificate of its own connection and no other, and puts it in the
scope as the ASGI TLS extension says (`scope["extensions"]["tls"]["client_cert_chain"]`). The apps
read only that standard key (`core_ext.peer`); nothing else of hypercorn's internals is used.
"""
from __future__ import annotations

import contextvars
import os
import ssl

from hypercorn.config import Config as HypercornConfig

# The PEM of the client certificate the connection's handshake verified; None: none was sent.
_PEER_PEM: contextvars.ContextVar[str | None] = contextvars.ContextVar("gateway_tls_peer", default=None)


class _RecordingSSLObject(ssl.SSLObject):
    """An SSLObject that, once its handshake is done, leaves the peer's certificate for the apps."""

    def do_handshake(self) -> None:
        super().do_handshake()  # raises SSLWantReadError until the handshake is complete
        der = self.getpeercert(binary_form=True)
        _PEER_PEM.set(ssl.DER_cert_to_PEM_cert(der) if der else None)


class TlsConfig(HypercornConfig):
    """hypercorn's configuration with the recording SSL object on its server context."""

    def create_ssl_context(self) -> ssl.SSLContext | None:
        context = super().create_ssl_context()
        if context is not None:
            context.sslobject_class = _RecordingSSLObject
        return context


def configure(config: HypercornConfig, *, certfile: str, keyfile: str, client_ca: str = "") -> None:
    """Serve HTTPS with `certfile`/`keyfile`; with `client_ca`, only to clients it vouches for."""
    config.certfile = certfile
    config.keyfile = keyfile
    if client_ca:
        config.ca_certs = client_ca
        # Required, not optional: a client without a certificate the CA signed never gets an HTTP
        # exchange at all (the handshake fails), whatever token it holds.
        config.verify_mode = ssl.CERT_REQUIRED


def with_tls_extension(app):
    """`app` behind a step that adds the ASGI TLS extension to each request over TLS."""

    async def wrapped(scope, receive, send):
        if scope.get("type") in ("http", "websocket") and scope.get("scheme") in ("https", "wss"):
            pem = _PEER_PEM.get()
            tls = {"server_cert": None, "client_cert_chain": [pem] if pem else [], "client_cert_name": None,
                   "client_cert_error": None, "tls_version": None, "cipher_suite": None}
            scope = {**scope, "extensions": {**(scope.get("extensions") or {}), "tls": tls}}
        await app(scope, receive, send)

    return wrapped


# --- what check-config says about the files ---------------------------------------------------

def key_mode_problem(path: str) -> str:
    """Why the private key at `path` is too open ("" when only its owner may read it)."""
    try:
        mode = os.stat(path).st_mode & 0o777
    except OSError:
        return ""  # missing or unreadable: said elsewhere, in the words for that
    open_bits = mode & 0o077
    if not open_bits:
        return ""
    who = [w for w, bits in (("its group", 0o070), ("others", 0o007)) if open_bits & bits]
    verbs = ("readable" if open_bits & 0o044 else "writable" if open_bits & 0o022 else "usable")
    return f"{path} is mode {mode:04o}: {verbs} by {' and '.join(who)}; run chmod 600 {path}"


def _read_pem(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _public_der(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def pair_problems(section: str, certfile: str, keyfile: str) -> list[tuple[str, str]]:
    """The certificate chain and key of `section` as files: readable, PEM, the key unencrypted,
    private to its owner, and the certificate's own (their public keys are the same)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    problems = []
    cert_key, key_key = f"{section}.tls_cert", f"{section}.tls_key"
    cert = key = None
    for name, path in ((cert_key, certfile), (key_key, keyfile)):
        if not os.path.isfile(path):
            problems.append((name, f"{path} does not exist (give the path of the PEM file, or set tls_cert "
                                   "and tls_key to \"\" for plain HTTP)"))
        elif not os.access(path, os.R_OK):
            problems.append((name, f"{path} cannot be read by this user"))
    if problems:
        return problems
    try:
        cert = x509.load_pem_x509_certificate(_read_pem(certfile) or b"")
    except ValueError:
        problems.append((cert_key, f"{certfile} is not a PEM certificate"))
    try:
        key = serialization.load_pem_private_key(_read_pem(keyfile) or b"", password=None)
    except TypeError:
        problems.append((key_key, f"{keyfile} is encrypted; the gateway starts unattended and needs it unencrypted"))
    except ValueError:
        problems.append((key_key, f"{keyfile} is not a PEM private key"))
    else:
        mode = key_mode_problem(keyfile)
        if mode:
            problems.append((key_key, mode))
    if cert is not None and key is not None and _public_der(cert.public_key()) != _public_der(key.public_key()):
        problems.append((key_key, f"{keyfile} is not the key of the certificate {certfile} (their public keys differ)"))
    return problems


def client_ca_problem(path: str) -> str:
    """Why the client CA file at `path` cannot vouch for clients ("" when it can)."""
    from cryptography import x509

    if not os.path.isfile(path):
        return f"{path} does not exist (the PEM certificate of the CA that signs the clients' certificates)"
    data = _read_pem(path)
    if data is None:
        return f"{path} cannot be read by this user"
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        return f"{path} holds no PEM certificate"
    return ""
