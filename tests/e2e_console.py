#!/usr/bin/env python3
"""End-to-end tests of what the demos show on a console, as a user at a terminal sees it: the
programs in a pseudo-terminal of their own (harness.TerminalProc), keys typed at it, the screen
read back (harness.terminal_screen). Ends with "RESULT passed=N failed=M skipped=K".

    python3 tests/e2e_console.py          (builds the demos and tests/bin/attack_server if needed)

  CtrlCInATerminal  demo_server stopped with Ctrl+C typed at its terminal.
  Refusals          the lines demo_server prints for connections refused before they joined (the
                    short handshake time is tests/bin/attack_server's, CHATSOCK_ATTACK_SERVER as
                    in tests/e2e_attacks.py).
  WindowsConsole    demo_server.exe and demo_client.exe under wine in a terminal, with the native
                    programs as the other side. wine gives a program whose standard handles are
                    a terminal a console (its "unix console": GetConsoleMode succeeds and wine's
                    conhost draws the screen with escape sequences), so the programs take their
                    console paths: WriteConsoleW out, ReadConsoleW in. Skipped, saying why,
                    without wine or the .exe files (or when those are older than their sources);
                    tests/run_windows.sh runs them (`make test-windows`).

The demos are harness.py's DEMO_SERVER and DEMO_CLIENT (CHATSOCK_SERVER_CMD, CHATSOCK_CLIENT_CMD,
CHATSOCK_BIN_DIR); the Windows ones those if they are .exe programs, else wine with the .exe
files in the source tree.
"""
import os
import re
import shutil
import signal
import sys
import tempfile
import termios
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (ATTACK_SERVER, CLIENT_ON_WINDOWS, DEMO_CLIENT, DEMO_SERVER, DEVNULL, HOST,  # noqa: E402
                     LISTENING_DEMO, build_attack_server,
                     NATIVE_CLIENT, NATIVE_SERVER, ROOT, SERVER_ON_WINDOWS, TIMEOUT, ChatTestCase, Proc,
                     build_demos, main, recv_until_closed, skip_if_windows_server, spawn_in_terminal)


def setUpModule():
    build_demos()
    build_attack_server()


# wine leaves the terminal's ISIG on, so the terminal itself echoes "^C" and wine turns the
# SIGINT into a Ctrl+C event; wine's console then draws "stopped" where it last left the cursor,
# right after the "^C" it never saw: "^Cstopped" (seen with wine 8.0). The library's line break
# after "^C" is POSIX only: a Windows console echoes no "^C" for a program not reading it.
WINE_ECHO = ('under wine the terminal echoes "^C" behind the console\'s back, and the console '
             'draws "stopped" right after it (wine\'s, not the program\'s; a Windows console echoes no "^C")')


class CtrlCInATerminal(ChatTestCase):
    @skip_if_windows_server(WINE_ECHO)
    def test_ctrl_c_stops_the_server_and_stopped_is_a_line_of_its_own(self):
        server = spawn_in_terminal(self, [*DEMO_SERVER, HOST, 0, "LOG"], label="demo_server")
        server.wait_for(re.compile(r"^listening on 127\.0\.0\.1:\d+ \(\w+\)$", re.M))
        server.type(b"\x03")  # Ctrl+C: the terminal echoes "^C" and sends SIGINT
        self.assertEqual(server.wait(), 0, server.describe())
        lines = server.screen()
        self.assertNotIn(b"^Cstopped", server.raw, server.describe())
        self.assertIn("stopped", lines, f"\"stopped\" is not a line of its own: {server.describe()}")
        self.assertEqual(lines[lines.index("stopped") - 1], "^C", server.describe())


class Refusals(ChatTestCase):
    """A connection refused before it joined shows on the server's console with its address."""

    def test_a_bad_header_first_shows_as_refused_with_the_reason(self):
        server, port = self.start_server()
        s = self.raw_connect(port)
        here = s.getsockname()[1]
        s.sendall(b"1 2       ")  # digits and spaces (a frame client), but not a length
        server.wait_for(f"refused 127.0.0.1:{here}: protocol error: bad frame header")
        recv_until_closed(s)
        line = next(x for x in server.lines() if f"127.0.0.1:{here}" in x)
        self.assertRegex(line, rf"\Arefused 127\.0\.0\.1:{here}: protocol error: bad frame header\b")

    def test_a_silent_connection_shows_as_refused_no_username_in_time(self):
        server = self.spawn([ATTACK_SERVER, "--host", HOST, "--port", 0, "--log", "chat.log",
                             "--handshake-ms", 300], stdin=DEVNULL, label="attack_server")
        port = int(server.wait_for(LISTENING_DEMO).group(1))
        s = self.raw_connect(port)  # connected, and never a byte
        here = s.getsockname()[1]
        t0 = time.monotonic()
        server.wait_for(f"refused 127.0.0.1:{here}: no username in time\n")
        self.assertGreater(time.monotonic() - t0, 0.2, "refused before its handshake time was up")
        recv_until_closed(s)  # and the connection is closed
        self.assertIsNone(server.p.poll(), "the server goes on")


# The Windows programs: those chosen through the environment, or the .exe files under wine.
WIN_SERVER = DEMO_SERVER if SERVER_ON_WINDOWS else ["wine", os.path.join(ROOT, "demo_server.exe")]
WIN_CLIENT = DEMO_CLIENT if CLIENT_ON_WINDOWS else ["wine", os.path.join(ROOT, "demo_client.exe")]
WINE_START = 3 * TIMEOUT  # a wine program's first output, the console's set-up included
WINE_PREFIX_START = 120  # the first wine program of a session may create the prefix (~/.wine)


def _why_not_windows():
    """Why the WindowsConsole tests cannot run here, or None."""
    if not shutil.which("wine"):
        return "wine is not installed"
    for command, given in ((WIN_SERVER, SERVER_ON_WINDOWS), (WIN_CLIENT, CLIENT_ON_WINDOWS)):
        exe = command[-1]
        if not os.path.isfile(exe):
            return f"{exe} is missing: `make windows` builds it (`make test-windows` runs these tests)"
        if given:
            continue  # chosen through the environment: used as it is
        sources = [os.path.join(ROOT, n) for n in ("chatsock.hpp", os.path.basename(exe)[:-4] + ".cpp")]
        newer = [n for n in sources if os.path.getmtime(n) > os.path.getmtime(exe)]
        if newer:
            return (f"{exe} is older than {os.path.basename(newer[0])}: `make windows` rebuilds it "
                    "(`make test-windows` runs these tests)")
    return None


WHY_NOT_WINDOWS = _why_not_windows()
TEXT = "hola ñandú 数"
NAME = "ñandú"


def no_suspend_key(attrs):
    """Ctrl+Z reaches the program: without this the terminal turns it into SIGTSTP (wine keeps
    ISIG on), and wine stops like any Linux program. As `stty susp undef`."""
    attrs[6][termios.VSUSP] = b"\0"


@unittest.skipIf(WHY_NOT_WINDOWS, WHY_NOT_WINDOWS)
class WindowsConsole(ChatTestCase):
    @classmethod
    def setUpClass(cls):
        # One wine program lives through these tests, so the wineserver does too: it otherwise
        # exits 3 s after its last program, and a program starting just then dies ("wine client
        # error ... recvmsg"). As tests/run_windows.sh does; it also sets up the wine prefix.
        tmp = tempfile.TemporaryDirectory(prefix="chatsock-wine-")
        cls.addClassCleanup(tmp.cleanup)
        keepalive = Proc([*WIN_SERVER, HOST, "0", os.path.join(tmp.name, "keepalive.log")], tmp.name,
                         stdin=DEVNULL, label="keepalive demo_server.exe", crlf=True)
        cls.addClassCleanup(cls._stop, keepalive)
        keepalive.wait_for(LISTENING_DEMO, timeout=WINE_PREFIX_START)

    @staticmethod
    def _stop(keepalive):
        keepalive.signal(signal.SIGINT)  # a Ctrl+C event under wine: it stops cleanly
        try:
            keepalive.wait()
        except AssertionError:
            pass  # killed below
        keepalive.kill()

    def assert_a_console(self, proc):
        """wine drew the output through a console (conhost's escape sequences), so the program
        wrote with WriteConsoleW: without a console this suite would test nothing new."""
        self.assertIn(b"\x1b[", proc.raw, f"wine gave no console on the terminal: {proc.describe()}")

    def windows_client_in_a_terminal(self, port, name="win", termios_change=None):
        win = spawn_in_terminal(self, [*WIN_CLIENT, HOST, port, name], label="demo_client.exe",
                                termios_change=termios_change)
        win.wait_for(f"server > welcome, {name}!", timeout=WINE_START)
        return win

    def test_non_ascii_text_from_others_shows_in_the_windows_clients_console(self):
        _, port = self.start_server(program=NATIVE_SERVER)
        win = self.windows_client_in_a_terminal(port)
        lin = self.client(port, "lin", program=NATIVE_CLIENT)
        win.wait_for("server > lin joined")
        lin.send(TEXT + "\n")
        win.wait_for("lin > hola", timeout=TIMEOUT)
        try:
            win.wait_for(f"lin > {TEXT}", timeout=1)  # the whole line is drawn at once
        except AssertionError:
            pass  # the assertion below says what the screen shows instead
        self.assertIn(f"lin > {TEXT}", win.screen(), win.describe())
        self.assertIn(TEXT.encode(), win.raw, "the terminal received the text as UTF-8")
        self.assert_a_console(win)

    def test_a_non_ascii_name_shows_in_the_windows_servers_console(self):
        server = spawn_in_terminal(self, [*WIN_SERVER, HOST, 0, "chat.log"], label="demo_server.exe")
        m = server.wait_for(re.compile(r"^listening on 127\.0\.0\.1:(\d+) \(WSAPoll\)$", re.M),
                            timeout=WINE_START)
        self.client(int(m.group(1)), NAME, program=NATIVE_CLIENT)
        server.wait_for(f"{NAME} joined from 127.0.0.1:")
        self.assertTrue(any(line.startswith(f"{NAME} joined from 127.0.0.1:") for line in server.screen()),
                        server.describe())
        self.assert_a_console(server)
        server.type(b"\x03")  # Ctrl+C: SIGINT from the terminal, a Ctrl+C event under wine
        self.assertEqual(server.wait(), 0, server.describe())

    def check_end_of_input_line(self, keys, termios_change=None):
        """Types a line, then `keys` (a line that starts with Ctrl+D or Ctrl+Z, and Enter) at
        demo_client.exe: the client ends its input and exits 0, and the other client gets the
        first line and then the leave, nothing else."""
        _, port = self.start_server(program=NATIVE_SERVER)
        lin = self.client(port, "lin", program=NATIVE_CLIENT)
        win = self.windows_client_in_a_terminal(port, termios_change=termios_change)
        lin.wait_for("server > win joined\n")
        win.wait_for_key_by_key_input()  # wine's console is reading: keys go to it
        win.type("typed at the console\r")  # Enter: so the console is being read from here on
        lin.wait_for("\nwin > typed at the console\n")
        win.wait_for_key_by_key_input()
        win.type(keys)
        try:
            rc, still_running = win.wait(), None
        except AssertionError as e:
            rc, still_running = None, str(e)
        if still_running:  # say what reached the other client too
            self.fail(f"{still_running}\n{lin.describe()}")
        lin.wait_for("server > win left\n")
        self.assertEqual(rc, 0, win.describe())
        lines = lin.lines()
        self.assertEqual(lines[lines.index("server > win joined"):],
                         ["server > win joined", "win > typed at the console", "server > win left"],
                         f"the line {keys!r} must not reach anyone: {lin.describe()}")
        self.assert_a_console(win)

    def test_a_line_starting_with_ctrl_d_ends_the_windows_clients_input(self):
        self.check_end_of_input_line(b"\x04clear\r")  # Ctrl+D, then text, then Enter

    def test_ctrl_z_then_enter_ends_the_windows_clients_input(self):
        self.check_end_of_input_line(b"\x1a\r", termios_change=no_suspend_key)


if __name__ == "__main__":
    main(__name__, {"server": DEMO_SERVER, "client": DEMO_CLIENT, "attack server": [ATTACK_SERVER],
                    "windows server": WIN_SERVER, "windows client": WIN_CLIENT})
