#!/usr/bin/env python3
"""Windows and Linux programs in one chat: demo_server.exe and demo_client.exe under wine with
the native demo_server and demo_client, over loopback. Checks that UTF-8 crosses the Windows
client's pipes intact both ways. Run by tests/run_windows.sh (after `make windows all`);
ends with "RESULT passed=N failed=M skipped=K".

    python3 tests/windows/e2e_mixed.py
"""
import os
import signal
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from harness import (CLIENT_ON_WINDOWS, DEMO_CLIENT, DEMO_SERVER, NATIVE_CLIENT, NATIVE_SERVER,  # noqa: E402
                     ROOT, SERVER_ON_WINDOWS, ChatTestCase, main)

# The Windows programs: those chosen through the environment, or the .exe files under wine.
WIN_SERVER = DEMO_SERVER if SERVER_ON_WINDOWS else ["wine", os.path.join(ROOT, "demo_server.exe")]
WIN_CLIENT = DEMO_CLIENT if CLIENT_ON_WINDOWS else ["wine", os.path.join(ROOT, "demo_client.exe")]
SERVERS = {"windows server": WIN_SERVER, "linux server": NATIVE_SERVER}

TEXT = "João 数据"
TEXT_UTF8 = b"Jo\xc3\xa3o \xe6\x95\xb0\xe6\x8d\xae"


def setUpModule():
    for command in (WIN_SERVER, WIN_CLIENT, NATIVE_SERVER, NATIVE_CLIENT):
        if not os.path.isfile(command[-1]):
            raise RuntimeError(f"{command[-1]} is missing: run `make windows all` first")


class MixedChat(ChatTestCase):
    def test_linux_and_windows_clients_chat_through_either_server(self):
        for label, server_program in SERVERS.items():
            with self.subTest(server=label):
                server, port = self.start_server(label.replace(" ", "-") + ".log", program=server_program)
                lin = self.client(port, "lin", program=NATIVE_CLIENT)
                win = self.client(port, "win", program=WIN_CLIENT)
                lin.wait_for("server > win joined\n")
                lin.send("hello from linux\n")
                win.wait_for("\nlin > hello from linux\n")
                win.send("hello from windows\n")
                lin.wait_for("\nwin > hello from windows\n")
                server.signal(signal.SIGINT)  # wine turns it into a console Ctrl+C event
                self.assertEqual(server.wait(), 0, server.describe())
                for c in (lin, win):
                    c.wait_for("server > the server is stopping\n")
                    self.assertNotEqual(c.wait(), 0, c.describe())
                    self.assertEqual(c.err, b"Connection closed by the server\n")


class Utf8(ChatTestCase):
    def test_windows_client_prints_the_exact_utf8_bytes_it_receives(self):
        for label, server_program in SERVERS.items():
            with self.subTest(server=label):
                _, port = self.start_server(program=server_program)
                win = self.client(port, "win", program=WIN_CLIENT)
                lin = self.client(port, "lin", program=NATIVE_CLIENT)
                win.wait_for("server > lin joined\n")
                lin.send(TEXT + "\n")
                win.wait_for(f"\nlin > {TEXT}\n")
                # Byte for byte, as written: UTF-8, and the C runtime's "\r\n" for "\n" on a pipe.
                self.assertIn(b"\r\nlin > " + TEXT_UTF8 + b"\r\n", win.raw_out)
                self.assertNotIn(b"?", win.raw_out, "no code page conversion on the way out")

    def test_utf8_from_the_windows_clients_piped_stdin_arrives_intact(self):
        for label, server_program in SERVERS.items():
            with self.subTest(server=label):
                log = label.replace(" ", "-") + ".log"
                _, port = self.start_server(log, program=server_program)
                lin = self.client(port, "lin", program=NATIVE_CLIENT)
                win = self.client(port, "win", program=WIN_CLIENT)
                win.send(TEXT_UTF8 + b"\n" + TEXT_UTF8 + b" crlf\r\n")
                lin.wait_for(b"\nwin > " + TEXT_UTF8 + b"\nwin > " + TEXT_UTF8 + b" crlf\n")
                win.close_stdin()
                self.assertEqual(win.wait(), 0, win.describe())
                lin.wait_for("server > win left\n")
                with open(self.path(log), "rb") as f:
                    events = f.read()
                self.assertIn(b"\tmessage\twin\t" + TEXT_UTF8 + b"\n", events)
                self.assertIn(b"\tmessage\twin\t" + TEXT_UTF8 + b" crlf\n", events)

    def test_utf8_username_typed_at_the_windows_clients_prompt(self):
        _, port = self.start_server(program=NATIVE_SERVER)
        lin = self.client(port, "lin", program=NATIVE_CLIENT)
        win = self.client(port, None, program=WIN_CLIENT)
        win.wait_for("Username: ")
        win.send(TEXT_UTF8 + b"\r\n")
        win.wait_for(f"Username: server > welcome, {TEXT}! 1 other user online\n")
        lin.wait_for(f"server > {TEXT} joined\n")

    def test_utf8_username_on_the_windows_clients_command_line(self):
        _, port = self.start_server(program=NATIVE_SERVER)
        win = self.client(port, TEXT, program=WIN_CLIENT, joined=False)
        win.wait_for(f"server > welcome, {TEXT}! 0 other users online\n")


if __name__ == "__main__":
    main(__name__, {"windows server": WIN_SERVER, "windows client": WIN_CLIENT,
                    "linux server": NATIVE_SERVER, "linux client": NATIVE_CLIENT})
