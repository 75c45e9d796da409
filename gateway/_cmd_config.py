"""`gateway check-config FILE` and `gateway keygen`, and the first-start key pair of `gateway run`."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from ._config import Config, ConfigError, KeysConfig, check_files, load_config, notes, public_key_path

log = logging.getLogger("gateway.config")


def add_check_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="the configuration file (TOML) to check")


def run_check_config(args) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        problems = exc.problems
    else:
        problems = check_files(config)
    if problems:
        for key, problem in problems:
            print(f"{key}: {problem}")
        return 2
    for key, note in notes(config):
        print(f"note: {key}: {note}")
    print(f"OK: {config.store.id}, {len(config.devices)} device{'' if len(config.devices) == 1 else 's'}")
    return 0


def add_keygen_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="DIR", default="keys",
                        help="directory to write the key pair into, made if missing (default: keys)")
    parser.add_argument("--name", default="store",
                        help="file name stem: NAME.pem and NAME.pub.pem (default: store)")


def run_keygen(args) -> int:
    if not args.name or os.sep in args.name or args.name.startswith("."):
        print(f"keygen: --name must be a plain file name stem, got {args.name!r}", file=sys.stderr)
        return 2
    from upstream._keys import KeyFileError

    private_path = os.path.join(args.out, f"{args.name}.pem")
    try:
        public_path = write_store_keypair(private_path)
    except (OSError, KeyFileError) as exc:  # exists already, or the folder cannot be written
        print(f"keygen: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {private_path} (private key, mode 0600: keep it on this machine)")
    if args.name == "store":
        print(f"wrote {public_path} (public key: give it to the ERP to verify this store's batches)")
    else:
        print(f"wrote {public_path} (public key: give it to whoever verifies what {args.name}.pem signs)")
    return 0


def write_store_keypair(private_path: str) -> str:
    """Write a new Ed25519 pair at `private_path` and beside it (`x.pem` -> `x.pub.pem`).

    Refuses (FileExistsError) when either file exists: a store's signing key is never replaced by
    accident, since the ERP verifies every batch with its public half. Returns the public path.
    """
    from upstream._keys import write_keypair  # the one place keys are made and read

    public_path = public_key_path(private_path)
    for path in (private_path, public_path):
        if os.path.lexists(path):
            raise FileExistsError(f"{path} exists; refusing to overwrite a key (move it away first)")
    os.makedirs(os.path.dirname(os.path.abspath(private_path)), mode=0o700, exist_ok=True)
    write_keypair(private_path, public_path)
    return public_path


def ensure_signing_key(keys: KeysConfig) -> bool:
    """Make the store's key pair if the private key is missing; True when it was made now.

    For `gateway run` on the embedded default, so a fresh machine starts without a manual step.
    """
    if os.path.exists(keys.signing_key):
        return False
    public_path = write_store_keypair(keys.signing_key)
    log.warning("made a new store signing key %s (public key %s): give the public key to the ERP",
                keys.signing_key, public_path)
    return True


def prepare(config: Config, *, create_keys: bool) -> list[tuple[str, str]]:
    """Before `gateway run` opens anything: make missing keys if asked, then the file problems."""
    if create_keys:
        ensure_signing_key(config.keys)
    for key, note in notes(config):
        log.warning("%s: %s", key, note)
    return check_files(config)
