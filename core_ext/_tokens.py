"""Bearer tokens as the apps check them: by SHA-256, in constant time, replaceable while serving.

A configured token is either the token itself or `sha256:<64 hex digits>`, its SHA-256: a file that
holds only digests gives nobody who reads it a token to use. Either way the apps keep only digests
and compare the digest of what a client sent with every one of them, so the time taken says nothing
about which entry (if any) matched, nor how much of a token was right.
"""
from __future__ import annotations

import hashlib
import hmac
import re

SHA256_PREFIX = "sha256:"
_HEX64 = re.compile(r"[0-9a-f]{64}")


def digest_problem(configured: str) -> str:
    """Why a `sha256:` entry is not usable ("" when it is, or when it is a plain token)."""
    if not configured.startswith(SHA256_PREFIX):
        return ""
    if not _HEX64.fullmatch(configured[len(SHA256_PREFIX):]):
        return "a 'sha256:' token must be followed by 64 lower-case hex digits (`gateway token new` prints one)"
    return ""


def digest_of(configured: str) -> bytes:
    """The 32-byte SHA-256 a configured entry stands for (`sha256:<hex>` or the token itself)."""
    if configured.startswith(SHA256_PREFIX) and not digest_problem(configured):
        return bytes.fromhex(configured[len(SHA256_PREFIX):])
    return hashlib.sha256(configured.encode("utf-8")).digest()


def hashed_form(token: str) -> str:
    """What to write in the configuration instead of `token`."""
    return SHA256_PREFIX + hashlib.sha256(token.encode("utf-8")).hexdigest()


class TokenTable:
    """name -> token digest; `find` answers the name a presented token belongs to ("" for none)."""

    def __init__(self, configured: dict[str, str] | None = None):
        self._entries: tuple[tuple[str, bytes], ...] = ()
        self.replace(configured or {})

    def replace(self, configured: dict[str, str]) -> None:
        """Take a new set of tokens at once: a request sees the old set or the new one, never a mix."""
        # An empty token would let any `Bearer ` header in; the configuration check refuses it too.
        self._entries = tuple((name, digest_of(token)) for name, token in configured.items() if token)

    @property
    def names(self) -> list[str]:
        return sorted(name for name, _ in self._entries)

    def __bool__(self) -> bool:
        return bool(self._entries)

    def find(self, given: bytes) -> str:
        if not given:
            return ""
        digest = hashlib.sha256(given).digest()
        found = ""
        entries = self._entries  # one snapshot for the whole walk
        for name, expected in entries:
            # Every entry is compared, without stopping at a match.
            if hmac.compare_digest(digest, expected):
                found = name
        return found
