"""The ECR/1 terminal simulator and the pty cable, as the tests import them (they live in `demo_store`,
which the demo store drives its lanes with)."""
from demo_store._terminal import ACK, ETX, NAK, STX, Cable, Terminal, TerminalError, build_frame

__all__ = ["ACK", "ETX", "NAK", "STX", "Cable", "Terminal", "TerminalError", "build_frame"]
