"""The demo store: simulators that drive a real gateway the way a store does (`gateway demo`).

Never imported by `gateway run`: nothing simulated runs in a store. The ECR/1 terminal simulator and
the pty cable are also what the tests speak to the gateway with.
"""
from ._terminal import ACK, ETX, NAK, STX, Cable, Terminal, TerminalError, build_frame

__all__ = ["ACK", "ETX", "NAK", "STX", "Cable", "Terminal", "TerminalError", "build_frame"]
