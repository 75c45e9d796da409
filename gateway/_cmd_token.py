"""`gateway token new NAME`: a fresh terminal token and the line to paste into the configuration."""
from __future__ import annotations

import argparse
import re
import secrets
import sys

from core_ext._tokens import hashed_form

from ._config import _NAME

TOKEN_BYTES = 32  # 256 bits from the system's CSPRNG: nothing to guess, nothing to brute-force


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["new"], help="new: print a fresh token for terminal NAME and the "
                                                        "lines to paste (nothing is written)")
    parser.add_argument("name", metavar="NAME", help="the terminal's name (1-32 letters, digits, '_', '.', '-')")
    parser.add_argument("--bytes", type=int, default=TOKEN_BYTES, metavar="N",
                        help=f"random bytes in the token, at least 16 (default {TOKEN_BYTES})")


def new_token(n_bytes: int = TOKEN_BYTES) -> str:
    return secrets.token_urlsafe(n_bytes)


def run(args) -> int:
    name = args.name
    if not _NAME.fullmatch(name):
        print(f"token: NAME must be 1 to 32 letters, digits, '_', '.' or '-' (starting with a letter or digit), "
              f"got {name!r}", file=sys.stderr)
        return 2
    if args.bytes < 16:
        print(f"token: --bytes must be at least 16, got {args.bytes}", file=sys.stderr)
        return 2
    token = new_token(args.bytes)
    # A TOML bare key cannot hold '.': such a name is quoted.
    key = name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else f'"{name}"'
    print(f"token for terminal {name} (give it to the terminal; it is shown only now):")
    print(f"  {token}")
    print("paste under [pos_api.tokens] either the token itself:")
    print(f'  {key} = "{token}"')
    print("or only its SHA-256, so the file holds no usable token:")
    print(f'  {key} = "{hashed_form(token)}"')
    print("then send the gateway SIGHUP (systemctl reload gateway) to take it without a restart.")
    return 0
