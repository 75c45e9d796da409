"""SIGHUP: read the configuration file again and take what can change while serving.

What changes in place: the terminals' tokens (`[pos_api.tokens]`) and the ERP's token
(`upstream.token`). Each app swaps its whole token table in one assignment, so a request is checked
against the old set or the new one; no listener is rebound and no connection or request in flight
is touched. Everything else (listeners, TLS files, keys, the store, devices) is read at start only:
a device task owns its port or folder and its metrics series, and a request of it may be in the core
loop, so adding or removing one while serving is left to a restart. A reload that finds such a
change logs which keys changed and that they need a restart. The log names terminals, never tokens.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from core_ext._tokens import digest_of

from ._config import Config

log = logging.getLogger("gateway.reload")

# Sections whose keys take effect only at the next start (besides the tokens, reloaded in place).
_RESTART_SECTIONS = ("store", "keys", "pos_api", "upstream", "metrics", "nats")
_RELOADED = {("pos_api", "tokens"), ("upstream", "token")}


@dataclass(frozen=True)
class TokenChanges:
    added: tuple = ()
    removed: tuple = ()
    changed: tuple = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def describe(self) -> str:
        parts = [f"{what} {', '.join(names)}" for what, names in
                 (("added", self.added), ("removed", self.removed), ("changed", self.changed)) if names]
        return "; ".join(parts) or "unchanged"


def token_changes(old: dict, new: dict) -> TokenChanges:
    """Names only. A token and its own `sha256:` form are the same token: no change."""
    changed = tuple(sorted(n for n in old.keys() & new.keys() if digest_of(old[n]) != digest_of(new[n])))
    return TokenChanges(added=tuple(sorted(new.keys() - old.keys())), removed=tuple(sorted(old.keys() - new.keys())),
                        changed=changed)


def needs_restart(old: Config, new: Config) -> list[str]:
    """The keys that differ but are only read at start (dotted; devices by name)."""
    keys = []
    for section in _RESTART_SECTIONS:
        before, after = getattr(old, section), getattr(new, section)
        for f in dataclasses.fields(before):
            if (section, f.name) not in _RELOADED and getattr(before, f.name) != getattr(after, f.name):
                keys.append(f"{section}.{f.name}")
    old_devices = {d.get("name"): d for d in old.devices}
    new_devices = {d.get("name"): d for d in new.devices}
    for name in sorted(old_devices.keys() | new_devices.keys(), key=str):
        if old_devices.get(name) != new_devices.get(name):
            keys.append(f"devices ({name})")
    return keys


@dataclass(frozen=True)
class Reload:
    """What one SIGHUP did: the token changes applied, the keys left for a restart, or the problems."""

    terminals: TokenChanges = TokenChanges()
    erp_token_changed: bool = False
    restart_needed: tuple = ()
    problems: tuple = ()   # (key, problem): the file was not taken at all

    def log(self, path: str) -> None:
        if self.problems:
            log.error("SIGHUP: %s is invalid; nothing was changed (the tokens in force stay): %s", path,
                      "; ".join(f"{k}: {p}" for k, p in self.problems))
            return
        log.info("SIGHUP: reloaded %s: terminal tokens %s; ERP token %s", path, self.terminals.describe(),
                 "changed" if self.erp_token_changed else "unchanged")
        if self.restart_needed:
            log.warning("SIGHUP: %s changed but is read only at start; restart the gateway to apply it",
                        ", ".join(self.restart_needed))
