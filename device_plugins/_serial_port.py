"""The one module that touches serial ports: pyserial sets the line up, trio does the I/O.

`open_serial(port, ...)` returns a plain `trio.abc.Stream`: for a device path, pyserial opens and
configures it (raw mode, baud rate, parity, stop bits) and the stream (`PortStream`) reads and
writes a duplicate of its file descriptor; for `socket://host:port` (a serial server on the network) a TCP stream; for
the other pyserial URLs (`loop://`, `rfc2217://host:port`, `spy://...`), which have no descriptor to
hand over, a stream whose reads and writes run pyserial's own calls in a worker thread.
"""
from __future__ import annotations

import os
import termios

import serial
import trio

from core_ext import RateLimitedLog

PARITIES = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD,
            "M": serial.PARITY_MARK, "S": serial.PARITY_SPACE}
STOPBITS = {1: serial.STOPBITS_ONE, 1.5: serial.STOPBITS_ONE_POINT_FIVE, 2: serial.STOPBITS_TWO}
BYTESIZES = {5: serial.FIVEBITS, 6: serial.SIXBITS, 7: serial.SEVENBITS, 8: serial.EIGHTBITS}


class SerialPortError(OSError):
    """The port cannot be opened (missing, busy, refused) or its settings are not valid."""

    def __init__(self, port: str, reason: str):
        super().__init__(f"serial port {port!r}: {reason}")
        self.port = port
        self.reason = reason


async def open_serial(port: str, *, baudrate: int = 115200, bytesize: int = 8, parity: str = "N",
                      stopbits: float = 1) -> trio.abc.Stream:
    """Open `port` (a device path or socket://host:port) as a trio stream."""
    if not isinstance(port, str) or not port:
        raise SerialPortError(str(port), "the port must be a device path or a URL")
    if port.startswith("socket://"):
        host, sep, number = port[len("socket://"):].rpartition(":")
        if not sep or not host or not number.isdigit():
            raise SerialPortError(port, "a socket URL is socket://host:port")
        try:
            return await trio.open_tcp_stream(host, int(number))
        except OSError as exc:
            raise SerialPortError(port, f"cannot connect: {exc}") from None
    settings = _settings(port, baudrate, bytesize, parity, stopbits)
    if "://" in port:
        problem = port_problem(port)
        if problem:
            raise SerialPortError(port, problem)
        ser = await trio.to_thread.run_sync(_open_url, port, settings)
        return _PyserialStream(ser, port)
    # Opening a tty is quick but is a blocking system call: keep it off the event loop.
    fd = await trio.to_thread.run_sync(_open_fd, port, settings)
    return PortStream(fd)


def port_problem(port) -> str | None:
    """Why `port` can never be opened (None when it may be): a check for the configuration."""
    if not isinstance(port, str) or not port:
        return "the port must be a device path or a pyserial URL"
    scheme, sep, _rest = port.partition("://")
    if not sep:
        return None
    if scheme == "socket":
        host, sep, number = _rest.rpartition(":")
        if not sep or not host or not number.isdigit():
            return "a socket URL is socket://host:port"
        return None
    try:
        serial.serial_for_url(port, do_not_open=True)
    except ValueError as exc:  # an unknown protocol, or a URL its protocol cannot read
        return f"not a pyserial URL pyserial can open: {exc}"
    except serial.SerialException:
        return None  # a known protocol whose target is missing now (hwgrep://): it may appear
    return None


def _settings(port: str, baudrate, bytesize, parity, stopbits) -> dict:
    if not isinstance(baudrate, int) or isinstance(baudrate, bool) or baudrate <= 0:
        raise SerialPortError(port, f"baudrate must be a positive integer, not {baudrate!r}")
    if bytesize not in BYTESIZES:
        raise SerialPortError(port, f"bytesize must be 5, 6, 7 or 8, not {bytesize!r}")
    if parity not in PARITIES:
        raise SerialPortError(port, f"parity must be one of N, E, O, M, S, not {parity!r}")
    if stopbits not in STOPBITS:
        raise SerialPortError(port, f"stopbits must be 1, 1.5 or 2, not {stopbits!r}")
    return {"baudrate": baudrate, "bytesize": BYTESIZES[bytesize], "parity": PARITIES[parity],
            "stopbits": STOPBITS[stopbits]}


def _open_fd(port: str, settings: dict) -> int:
    try:
        ser = serial.serial_for_url(port, timeout=0, exclusive=True, **settings)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise SerialPortError(port, str(exc)) from None
    try:
        # The tty keeps pyserial's settings; the duplicate descriptor outlives pyserial's object.
        fd = os.dup(ser.fileno())
    finally:
        ser.close()
    try:
        if os.isatty(fd):
            # pyserial leaves VMIN=0 (it times reads with select), and then a read with nothing to
            # read returns b"", which a stream reports as end of file. VMIN=1 makes it wait.
            attrs = termios.tcgetattr(fd)
            attrs[6][termios.VMIN] = 1
            attrs[6][termios.VTIME] = 0
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
    except termios.error as exc:
        os.close(fd)
        raise SerialPortError(port, f"cannot set the line up: {exc}") from None
    return fd


class PortStream(trio.abc.Stream):
    """A serial port's file descriptor (owned: closed by `aclose`) as a trio stream that reads and
    writes before it yields, as trio's own sockets do.

    `trio.lowlevel.FdStream` yields to every other runnable task before each read and write. When
    eight terminals send at once, an ACK or an answer then waited for all of their turns, several
    times over a round trip. Here the system call comes first; only one that would block waits for
    the descriptor (that wait is the checkpoint), and one that did not yields after it. A caller
    already cancelled still stops before the call, so nothing is read or written that it cannot see.
    """

    def __init__(self, fd: int):
        os.set_blocking(fd, False)
        self._fd = fd
        self._closed = False
        self._receiving = False
        self._sending = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        size = 4096 if max_bytes is None else max_bytes
        if not isinstance(size, int) or size < 1:
            raise ValueError("max_bytes must be an integer of at least 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is reading this port")
        self._receiving = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                data = self._read(size)
            except BlockingIOError:
                pass
            else:
                await trio.lowlevel.cancel_shielded_checkpoint()
                return data
            while True:
                await trio.lowlevel.wait_readable(self._fd)
                try:
                    return self._read(size)
                except BlockingIOError:
                    pass
        finally:
            self._receiving = False

    def _read(self, size: int) -> bytes:
        if self._closed:
            raise trio.ClosedResourceError("the port is closed")
        try:
            return os.read(self._fd, size)
        except BlockingIOError:
            raise
        except OSError as exc:
            raise trio.BrokenResourceError(f"the port went away: {exc}") from exc

    async def send_all(self, data) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is writing to this port")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            with memoryview(data) as view:
                sent = self._write(view)
                waited = False
                while sent < len(view):
                    await trio.lowlevel.wait_writable(self._fd)
                    waited = True
                    with view[sent:] as rest:
                        sent += self._write(rest)
            if not waited:
                await trio.lowlevel.cancel_shielded_checkpoint()
        finally:
            self._sending = False

    def _write(self, view: memoryview) -> int:
        """Bytes written now (0 when the port cannot take any yet)."""
        if self._closed:
            raise trio.ClosedResourceError("the port is closed")
        if not view:
            return 0
        try:
            return os.write(self._fd, view)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise trio.BrokenResourceError(f"the port went away: {exc}") from exc

    async def wait_send_all_might_not_block(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the port is closed")
        await trio.lowlevel.wait_writable(self._fd)

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            # Tasks waiting on the descriptor get ClosedResourceError, not a wait on a reused number.
            trio.lowlevel.notify_closing(self._fd)
            os.close(self._fd)
        await trio.lowlevel.checkpoint()


# How long one read of a descriptor-less pyserial port waits in its thread: the longest a
# cancellation (an ACK deadline, an unplug) waits for it.
URL_READ_WAIT_S = 0.05


def _open_url(port: str, settings: dict):
    try:
        return serial.serial_for_url(port, timeout=URL_READ_WAIT_S, write_timeout=5.0, **settings)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise SerialPortError(port, str(exc)) from None


class _PyserialStream(trio.abc.Stream):
    """A pyserial port without a file descriptor (loop://, rfc2217://), as a trio stream.

    Reads wait at most URL_READ_WAIT_S in a thread that is never abandoned: bytes a cancelled read
    already took are returned, not lost (the ECR/1 reader is cancelled at every ACK deadline).
    """

    def __init__(self, ser, port: str):
        self._ser = ser
        self._port = port
        self._closed = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        size = 4096 if max_bytes is None else max_bytes
        if size < 1:
            raise ValueError("max_bytes must be at least 1")
        while True:
            await trio.lowlevel.checkpoint_if_cancelled()
            if self._closed:
                raise trio.ClosedResourceError("the port is closed")
            data = await trio.to_thread.run_sync(self._read, size)
            if data:
                return data

    def _read(self, size: int) -> bytes:
        try:
            data = self._ser.read(1)
            waiting = self._ser.in_waiting if data else 0
            if waiting and size > 1:
                data += self._ser.read(min(waiting, size - 1))
            return data
        except (serial.SerialException, OSError, ValueError) as exc:
            raise trio.BrokenResourceError(f"{self._port}: {exc}") from None

    async def send_all(self, data) -> None:
        if self._closed:
            raise trio.ClosedResourceError("the port is closed")
        if data:
            await trio.to_thread.run_sync(self._write, bytes(data))
        else:
            await trio.lowlevel.checkpoint()

    def _write(self, data: bytes) -> None:
        try:
            self._ser.write(data)
            self._ser.flush()
        except (serial.SerialException, OSError, ValueError) as exc:
            raise trio.BrokenResourceError(f"{self._port}: {exc}") from None

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._ser.close()
        await trio.lowlevel.checkpoint()


def port_settings(device: dict) -> dict:
    """The serial settings of a device's configuration (115200 8N1 unless it says otherwise)."""
    return {"baudrate": device.get("baudrate", 115200), "bytesize": device.get("bytesize", 8),
            "parity": device.get("parity", "N"), "stopbits": device.get("stopbits", 1)}


BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0
# A port that is missing, or a device that keeps dropping off, logs once a minute at most per kind.
PORT_LOG_INTERVAL_S = 60.0


async def serve_port(device: dict, run_link, connected, log, *,
                     task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Keep `device`'s port open and `await run_link(stream)` on it, until cancelled.

    When the port is missing or goes away (unplugged), it is reopened with capped exponential
    backoff. `connected` is a gauge child set to 1 while the port is open. `task_status.started()`
    is called once the first open was attempted: a missing device never holds up the gateway.
    `log` is a logger or the device's `RateLimitedLog`: each kind of line is rate-limited either way.
    """
    if not isinstance(log, RateLimitedLog):
        log = RateLimitedLog(log, PORT_LOG_INTERVAL_S, trio.current_time)
    name = device["name"]
    port = device.get("port", "")
    connected.set(0)
    backoff = BACKOFF_FIRST_S
    started = False
    while True:
        stream = None
        try:
            stream = await open_serial(port, **port_settings(device))
        except SerialPortError as exc:
            log.warning("port_open", "%s: cannot open the port, retrying in %.1f s: %s", name,
                        backoff, exc.reason)
        if not started:
            task_status.started()
            started = True
        if stream is None:
            await trio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)
            continue
        backoff = BACKOFF_FIRST_S
        connected.set(1)
        log.info("port_connected", "%s: connected on %s", name, port)
        try:
            await run_link(stream)
            log.warning("port_closed", "%s: the port closed", name)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.warning("port_gone", "%s: the port went away: %s", name, exc)
        finally:
            connected.set(0)
            with trio.CancelScope(shield=True):
                await stream.aclose()
        await trio.sleep(backoff)
