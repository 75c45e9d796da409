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
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    new = sub.add_parser("new", help="print a fresh token for terminal NAME and the configuration line",
                         description="Print a fresh random token for the POS/1 terminal NAME (give it to the "
                                     "terminal) and the line to paste under [pos_api.tokens], in both forms: the "
                                     "token itself, or only its SHA-256 so the file holds no usable token. Then "
                                     "send the gateway SIGHUP (systemctl reload gateway) to take it without a "
                                     "restart. Nothing is written.")
    new.add_argument("name", metavar="NAME", help="the terminal's name (1-32 letters, digits, '_', '.', '-')")


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def run(args) -> int:
    name = args.name
    if not _NAME.fullmatch(name):
        print(f"token: NAME must be 1 to 32 letters, digits, '_', '.' or '-' (starting with a letter or digit), "
              f"got {name!r}", file=sys.stderr)
        return 2
    token = new_token()
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
