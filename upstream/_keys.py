"""Ed25519 keys in PEM, as `openssl genpkey -algorithm ed25519` writes them.

The private key is PKCS#8 PEM, unencrypted (the gateway starts unattended), created with mode 0600
and moved into place only once complete, so a crash never leaves half a key or a readable one.
The public key is SubjectPublicKeyInfo PEM, which `openssl pkeyutl -pubin` reads as it is.
"""
from __future__ import annotations

import os

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ._envelope import UpstreamError


class KeyFileError(UpstreamError):
    """A key file is missing, unreadable, or not an Ed25519 key of the expected kind."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"key file {path!r}: {problem}")
        self.path = path
        self.problem = problem


def _write_atomically(path: str, data: bytes, mode: int) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        # The mode is set at creation: the secret is never readable by others, not even briefly.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as exc:
        raise KeyFileError(path, f"cannot be created ({exc.strerror})") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise KeyFileError(path, f"cannot be written ({exc.strerror})") from exc
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_keypair(private_path: str, public_path: str, *, overwrite: bool = False) -> Ed25519PrivateKey:
    """Generate an Ed25519 key pair and write it; returns the private key.

    Refuses to replace an existing private key unless `overwrite` (a store's signing key changing
    silently would break the ERP's trust in every later batch).
    """
    if not overwrite and os.path.exists(private_path):
        raise KeyFileError(private_path, "already exists; refusing to replace a key")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    _write_atomically(private_path, private_pem, 0o600)
    _write_atomically(public_path, public_pem, 0o644)
    return key


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError as exc:
        raise KeyFileError(path, "does not exist") from exc
    except OSError as exc:
        raise KeyFileError(path, f"cannot be read ({exc.strerror})") from exc


def load_private_key(path: str) -> Ed25519PrivateKey:
    """The Ed25519 private key in PKCS#8 PEM at `path`."""
    data = _read(path)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:
        raise KeyFileError(path, "is encrypted; the gateway needs an unencrypted key") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyFileError(path, "is not a PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(path, f"holds a {type(key).__name__.lstrip('_')}, not an Ed25519 private key")
    return key


def load_public_key(path: str) -> Ed25519PublicKey:
    """The Ed25519 public key at `path` (SubjectPublicKeyInfo PEM; a private key file also serves)."""
    data = _read(path)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise KeyFileError(path, "is not a PEM public key") from exc
        key = private.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(path, f"holds a {type(key).__name__.lstrip('_')}, not an Ed25519 public key")
    return key


def raw_public_key(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of a public key (of a private key's public half)."""
    if isinstance(key, Ed25519PrivateKey):
        key = key.public_key()
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
