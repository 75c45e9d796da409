"""The command line as the docs show it: every --help works and names its options, and every
`gateway ...` command in README.md and docs/ names a real command with options it accepts."""
from __future__ import annotations

import argparse
import glob
import os
import re

import pytest

from gateway._cli import COMMANDS, build_parser, main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ERP_COMMANDS = ("pull", "push-master", "push-movements", "close-count", "consume", "publish-master", "publish-movements")


def command_parser(words: list[str]) -> argparse.ArgumentParser:
    """The parser of `gateway WORDS...` (a command, or `erp` and its subcommand)."""
    parser, _module = build_parser(words[0])
    for word in words:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return parser


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for action in parser._actions for o in action.option_strings if o.startswith("--")}


ALL = [[name] for name in COMMANDS] + [["erp", sub] for sub in ERP_COMMANDS] + [["report", "day"]]


@pytest.mark.parametrize("words", ALL, ids=" ".join)
def test_every_help_exits_0_and_names_each_option(words, capsys):
    assert main([*words, "--help"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"usage: gateway {' '.join(words)}")
    wanted = options(command_parser(words)) - {"--help"}
    assert wanted or words[0] in ("check-config",) or words in (["erp"], ["report"])
    for option in wanted:
        assert option in shown, f"gateway {' '.join(words)} --help does not mention {option}"


def test_top_help_lists_every_command_and_a_bare_gateway_is_a_usage_error(capsys):
    assert main(["--help"]) == 0
    shown = capsys.readouterr().out
    for name in COMMANDS:
        assert re.search(rf"^\s+{re.escape(name)}\b", shown, re.M), name
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_erp_help_lists_its_subcommands(capsys):
    assert main(["erp", "--help"]) == 0
    shown = capsys.readouterr().out
    for sub in ERP_COMMANDS:
        assert sub in shown


def test_an_unknown_option_is_refused_with_usage(capsys):
    assert main(["check-config", "--nope", "x.toml"]) == 2
    assert "unrecognized arguments: --nope" in capsys.readouterr().err


# `gateway WORDS --options` inside code: backtick spans and fenced blocks.
CODE = re.compile(r"```[^\n]*\n(.*?)```|`([^`\n]+)`", re.S)
# A command where a shell would run it: at the start, after a space, or as .../bin/gateway.
CALL = re.compile(r"(?:^|(?<=\s)|(?<=/bin/))gateway ([a-z][a-z-]*)((?: [a-z][a-z-]*)?)([^\n`|]*)", re.M)
COMMENT = re.compile(r"(?:^|\s)#.*$", re.M)


def doc_calls() -> list[tuple[str, list[str], set[str]]]:
    found = []
    paths = [os.path.join(ROOT, "README.md"), *sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))]
    for path in paths:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        for block in CODE.finditer(text):
            code = COMMENT.sub("", (block.group(1) or block.group(2)).replace("\\\n", " "))
            for call in CALL.finditer(code):
                words = [call.group(1)] + ([call.group(2).strip()] if call.group(1) in ("erp", "report") and call.group(2) else [])
                rest = (call.group(2) if call.group(1) not in ("erp", "report") else "") + call.group(3)
                found.append((os.path.relpath(path, ROOT), words, set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", rest))))
    return found


def test_the_docs_show_commands_at_all():
    calls = doc_calls()
    assert {words[0] for _p, words, _o in calls} >= {"run", "check-config", "keygen", "verify-ledger", "price", "erp"}


@pytest.mark.parametrize("where,words,used", doc_calls(), ids=lambda v: v if isinstance(v, str) else None)
def test_every_command_in_the_docs_exists_with_its_options(where, words, used):
    assert words[0] in COMMANDS, f"{where}: gateway {words[0]} is not a command"
    if words[0] == "erp" and len(words) > 1:
        assert words[1] in ERP_COMMANDS, f"{where}: gateway erp {words[1]} is not a command"
    known = options(command_parser(words)) | {"--help", "--version"}
    assert used <= known, f"{where}: gateway {' '.join(words)} has no option {sorted(used - known)}"
