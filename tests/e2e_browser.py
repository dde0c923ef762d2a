#!/usr/bin/env python3
"""End-to-end test of the chat page in a real browser: demo_server serves the page on its own
port, headless Chromium opens it and joins the chat over a WebSocket, and demo_client is the
other user. Ends with "RESULT passed=N failed=M skipped=K".

    python3 tests/e2e_browser.py                    (builds the demos if needed)
    python3 tests/e2e_browser.py --screenshot docs/chat-page.png
                                                    (also: a short chat between "ada" in the
                                                    browser and "bob", saved as a 720x480 PNG)

  ChatPage.test_the_page_is_served      GET / answers 200 text/html with the element ids below;
                                        no browser needed.
  ChatPage.test_a_browser_chats_with_demo_client
                                        a name typed into the page (keys, not JavaScript), the
                                        welcome, messages both ways, "bob left", and the close
                                        when the server stops.

The page only needs these element ids: #name and #join (the join form), #text and #send (the
message form), #log (one child element per event, class "msg" or "notice"), #status.

Chromium (CHATSOCK_CHROMIUM, default /usr/bin/chromium; Debian's `apt-get install chromium`)
runs headless with a temporary profile and is driven through the Chrome DevTools Protocol on a
pipe (--remote-debugging-pipe: it reads commands on fd 3 and writes answers and events on fd 4,
each a JSON text ended by a NUL byte), so no WebSocket library is needed. Without Chromium the
browser tests are skipped ("chromium not installed"). Everything stays on 127.0.0.1.
"""
import base64
import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import unittest
import urllib.error
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (DEMO_CLIENT, DEMO_SERVER, DEVNULL, HOST, ChatTestCase, build_demos,  # noqa: E402
                     main)

CHROMIUM = os.environ.get("CHATSOCK_CHROMIUM", "/usr/bin/chromium")
HAVE_CHROMIUM = os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)
needs_chromium = unittest.skipUnless(HAVE_CHROMIUM, "chromium not installed")

WAIT = 15.0  # the bound on any wait for the browser or for something it does
START = 30.0  # Chromium's own start, on a busy machine
WIDTH, HEIGHT = 720, 480
PAGE_IDS = ("name", "join", "text", "send", "log", "status")
SCREENSHOT = None  # --screenshot PATH (taken off the command line in __main__)
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, whatever http_proxy says


def setUpModule():
    build_demos()


# Runs in the child, then becomes Chromium: the two pipe ends it was given (their numbers in
# argv[1] and argv[2]) move to fds 3 and 4, where --remote-debugging-pipe expects them, and the
# signal dispositions Python changed are put back (as harness.py does for its terminal).
_ON_FDS_3_AND_4 = """\
import fcntl, os, signal, sys
for name in ("SIGPIPE", "SIGXFSZ"):
    signal.signal(getattr(signal, name), signal.SIG_DFL)
given = [int(fd) for fd in sys.argv[1:3]]
moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in given]  # clear of 3 and 4 first
for fd in given:
    os.close(fd)
os.dup2(moved[0], 3)  # dup2 leaves close-on-exec off: Chromium inherits 3 and 4
os.dup2(moved[1], 4)
os.execv(sys.argv[3], sys.argv[3:])
"""


class Browser:
    """Headless Chromium with one page, driven through the DevTools protocol on a pipe.
    kill() ends it and every process it started (they share its process group)."""

    def __init__(self, workdir):
        self.log_path = os.path.join(workdir, "chromium.log")
        to_chromium_r, self._to_chromium = os.pipe()
        self._from_chromium, from_chromium_w = os.pipe()
        args = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                f"--user-data-dir={os.path.join(workdir, 'chromium-profile')}",
                "--remote-debugging-pipe", f"--window-size={WIDTH},{HEIGHT}",
                "--no-default-browser-check", "--disable-extensions", "--disable-sync",
                "--disable-background-networking", "--disable-component-update",
                "--no-proxy-server", "--mute-audio", "about:blank"]
        try:
            with open(self.log_path, "wb") as log:
                ends = (to_chromium_r, from_chromium_w)
                self.p = subprocess.Popen([sys.executable, "-c", _ON_FDS_3_AND_4, *map(str, ends), *args],
                                          cwd=workdir, stdin=DEVNULL, stdout=log, stderr=log,
                                          pass_fds=ends, start_new_session=True)
        except BaseException:
            os.close(self._to_chromium)
            os.close(self._from_chromium)
            raise
        finally:
            os.close(to_chromium_r)
            os.close(from_chromium_w)
        self.args = args
        self._cond = threading.Condition()
        self._answers = {}  # command id -> answer
        self.events = []  # every event, in order: {"method", "params", "sessionId"}
        self._open = True
        self._next_id = 0
        self.session = None
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self):
        buffer = bytearray()
        while True:
            try:
                chunk = os.read(self._from_chromium, 1 << 16)
            except OSError:
                chunk = b""
            buffer += chunk
            messages = []
            while (end := buffer.find(b"\0")) >= 0:
                messages.append(json.loads(buffer[:end]))
                del buffer[:end + 1]
            with self._cond:
                for m in messages:
                    if "id" in m:
                        self._answers[m["id"]] = m
                    else:
                        self.events.append(m)
                if not chunk:
                    self._open = False
                self._cond.notify_all()
            if not chunk:
                return

    def call(self, method, timeout=WAIT, browser_level=False, **params):
        """Sends one command (to the page, or with browser_level to the browser itself) and
        returns its result; fails on an error answer or at the deadline."""
        with self._cond:
            self._next_id += 1
            ident = self._next_id
        message = {"id": ident, "method": method, "params": params}
        if self.session and not browser_level:
            message["sessionId"] = self.session
        data = json.dumps(message).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self._to_chromium, data):]
        except OSError as e:
            raise AssertionError(f"{method}: chromium is gone ({e}): {self.describe()}") from None
        deadline = time.monotonic() + timeout
        with self._cond:
            while ident not in self._answers:
                left = deadline - time.monotonic()
                if left <= 0 or not self._open:
                    raise AssertionError(f"{method}: no answer from chromium within {timeout}s: "
                                         f"{self.describe()}")
                self._cond.wait(min(left, 0.5))
            answer = self._answers.pop(ident)
        if "error" in answer:
            raise AssertionError(f"{method}{params}: {answer['error']}")
        return answer.get("result", {})

    def attach(self):
        """Takes the page Chromium opened (about:blank) as the one every later command goes to."""
        deadline = time.monotonic() + START
        while True:
            pages = [t for t in self.call("Target.getTargets", timeout=START)["targetInfos"]
                     if t["type"] == "page"]
            if pages:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"chromium opened no page within {START}s: {self.describe()}")
            time.sleep(0.1)
        self.session = self.call("Target.attachToTarget", targetId=pages[0]["targetId"],
                                 flatten=True)["sessionId"]
        self.call("Runtime.enable")  # page exceptions and console messages arrive as events
        self.call("Page.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT,
                  deviceScaleFactor=1, mobile=False)
        self.call("Emulation.setFocusEmulationEnabled", enabled=True)  # focus as in a window

    def open(self, url):
        """Loads url and waits until the document has loaded."""
        answer = self.call("Page.navigate", url=url)
        if answer.get("errorText"):
            raise AssertionError(f"{url}: {answer['errorText']}")
        self.wait_until(lambda: self.evaluate("document.readyState") == "complete",
                        f"{url} loaded")

    def evaluate(self, expression, wait=False):
        """The value of a JavaScript expression in the page (JSON-able values only); with
        wait, the value the promise it returns settles on."""
        answer = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=wait)
        if "exceptionDetails" in answer:
            details = answer["exceptionDetails"]
            raise AssertionError(f"in the page, {expression}: "
                                 f"{details.get('exception', {}).get('description') or details}")
        return answer["result"].get("value")

    def wait_until(self, condition, what, timeout=WAIT):
        """Polls condition() every 0.1 s until it is true (returning its value); fails at the
        deadline, saying what did not happen."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout}s: {what}\n{self.describe(page=True)}")
            time.sleep(0.1)

    # ---- what a user does --------------------------------------------------------------------
    def click(self, element_id):
        """A left click in the middle of the element, as the mouse would do it."""
        box = self.evaluate(f"(e => e && [e.getBoundingClientRect().x + e.offsetWidth / 2,"
                            f" e.getBoundingClientRect().y + e.offsetHeight / 2])"
                            f"(document.getElementById({element_id!r}))")
        if not box:
            raise AssertionError(f"the page has no #{element_id}\n{self.describe(page=True)}")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left",
                      clickCount=0 if kind == "mouseMoved" else 1)

    def type(self, text):
        """Text typed into whatever has the focus (as an input method would insert it)."""
        self.call("Input.insertText", text=text)

    def press_enter(self):
        keys = dict(key="Enter", code="Enter", windowsVirtualKeyCode=13, nativeVirtualKeyCode=13)
        self.call("Input.dispatchKeyEvent", type="keyDown", text="\r", unmodifiedText="\r", **keys)
        self.call("Input.dispatchKeyEvent", type="keyUp", **keys)

    def focused(self):
        return self.evaluate("document.activeElement ? document.activeElement.id : ''")

    # ---- what the page shows -----------------------------------------------------------------
    def state(self):
        """{"status": text, "log": [[class, text], ...]} of the chat page."""
        return self.evaluate("""({
            status: document.getElementById("status")?.textContent,
            log: Array.from(document.getElementById("log")?.children ?? [],
                            e => [e.className, e.textContent.trim()]) })""")

    def errors(self):
        """The page's uncaught JavaScript exceptions and console errors so far."""
        with self._cond:
            events = list(self.events)
        found = []
        for e in events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                found.append(d.get("exception", {}).get("description") or d.get("text"))
            elif e.get("method") == "Runtime.consoleAPICalled" and p.get("type") == "error":
                found.append(" ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
        return found

    def screenshot(self):
        """The page as PNG bytes."""
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    # ---- lifetime ----------------------------------------------------------------------------
    def describe(self, page=False):
        """Chromium's exit status, the page's errors and, with page, what it shows; the end
        of Chromium's own output."""
        try:
            with open(self.log_path, "rb") as f:
                log = f.read()[-4000:].decode("utf-8", "replace")
        except OSError:
            log = ""
        state = f"\n  page errors: {self.errors()}"
        if page and self._open and self.session:
            try:
                state += (f"\n  the page: {self.evaluate('location.href')}, #status and #log: {self.state()}"
                          f"\n  its text: {self.evaluate('document.body?.innerText.slice(0, 600)')!r}")
            except AssertionError as e:  # a failing browser must not fail the description
                state += f"\n  the page cannot be read: {e}"
        return (f"chromium (exit {self.p.poll()}){state}\n  its output (the end):\n"
                + "".join(f"    | {line}\n" for line in log.splitlines() if "dbus" not in line))

    def kill(self):
        """Asks Chromium to close, then kills its process group whatever it did; reaps it."""
        if self.p.poll() is None and self._open:
            try:
                self.call("Browser.close", timeout=2, browser_level=True)
                self.p.wait(timeout=2)
            except (AssertionError, subprocess.TimeoutExpired):
                pass
        try:  # its helpers (zygote, renderer) are in its process group, even once it has exited
            os.killpg(self.p.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            self.p.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            pass
        for fd in (self._to_chromium, self._from_chromium):
            try:
                os.close(fd)
            except OSError:
                pass
        self._thread.join(timeout=1)


def png_size(data):
    """(width, height) of PNG bytes, from the IHDR chunk."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise AssertionError(f"not a PNG: {data[:16]!r}")
    return struct.unpack(">II", data[16:24])


class BrowserTestCase(ChatTestCase):
    """A ChatTestCase that can start Chromium and use the chat page as a user would."""

    def start_browser(self):
        browser = Browser(self.dir)
        self.procs.append(browser)  # killed and reaped with the other processes
        browser.attach()
        return browser

    def wait_line(self, browser, kind, pattern, what=None):
        """Waits until #log has a child of class `kind` whose text matches `pattern` (a regex);
        returns its index in #log."""
        regex = re.compile(pattern)

        def found():
            log = browser.state()["log"]
            hits = [i for i, (cls, text) in enumerate(log) if kind in cls.split() and regex.search(text)]
            return hits and hits[0] + 1  # 1-based: index 0 must count as found
        return browser.wait_until(found, f'#log shows a "{kind}" line {what or pattern!r}') - 1

    def join_as(self, browser, port, name):
        """Opens the page and joins the way a user does: click the name field, type, Enter."""
        browser.open(f"http://{HOST}:{port}/")
        browser.click("name")
        self.assertEqual(browser.focused(), "name", "a click on #name gives it the focus")
        browser.type(name)
        browser.press_enter()
        return self.wait_line(browser, "notice", rf"welcome, {re.escape(name)}!")

    def say(self, browser, text):
        browser.click("text")
        self.assertEqual(browser.focused(), "text", "a click on #text gives it the focus")
        browser.type(text)
        browser.press_enter()


class ChatPage(BrowserTestCase):
    def test_the_page_is_served(self):
        _, port = self.start_server()
        with NO_PROXY.open(f"http://{HOST}:{port}/", timeout=WAIT) as answer:
            self.assertEqual(answer.status, 200)
            self.assertEqual(answer.headers.get_content_type(), "text/html")
            self.assertEqual(answer.headers.get_content_charset(), "utf-8")
            page = answer.read().decode("utf-8")
        for element_id in PAGE_IDS:
            self.assertRegex(page, rf"""\sid\s*=\s*(["']?){element_id}\1[\s/>]""",
                             f"no #{element_id} in the page")
        with self.assertRaises(urllib.error.HTTPError) as caught:
            NO_PROXY.open(f"http://{HOST}:{port}/no-such-page", timeout=WAIT)
        self.assertEqual(caught.exception.code, 404)

    @needs_chromium
    def test_a_browser_chats_with_demo_client(self):
        server, port = self.start_server()
        bob = self.client(port, "bob")
        browser = self.start_browser()

        welcome = self.join_as(browser, port, "ada")
        bob.wait_for("server > ada joined\n")
        log = browser.state()["log"]
        self.assertRegex(log[welcome][1], r"welcome, ada! 1 other user online", log)

        bob.send("hello from bob\n")
        self.wait_line(browser, "msg", r"\Abob: hello from bob\Z")
        tricky = "<i>not italic</i> & ünïcødé ✓"  # text, never markup; UTF-8 all the way
        bob.send(tricky + "\n")
        self.wait_line(browser, "msg", rf"\Abob: {re.escape(tricky)}\Z")
        self.assertEqual(browser.evaluate('document.querySelectorAll("#log i").length'), 0,
                         "received text must not become HTML")

        self.say(browser, "hi from the browser")
        bob.wait_for("\nada > hi from the browser\n", timeout=WAIT)
        self.wait_line(browser, "msg", r"\Aada: hi from the browser\Z", "(the page shows its own line)")

        bob.close_stdin()
        self.assertEqual(bob.wait(), 0, bob.describe())
        self.wait_line(browser, "notice", r"\bbob left\b")

        server.signal(signal.SIGINT)  # the server stops: the page says so and shows the close
        self.wait_line(browser, "notice", r"the server is stopping")
        browser.wait_until(lambda: re.search(r"(?i)disconnect|closed", browser.state()["status"]),
                           "#status shows the connection closed")
        self.assertEqual(server.wait(), 0, server.describe())

        log = [text for _, text in browser.state()["log"]]
        self.assertEqual(log.count("ada: hi from the browser"), 1,
                         f"the server must not echo a message to its sender: {log}")
        order = [next(i for i, t in enumerate(log) if re.search(p, t)) for p in
                 ("welcome, ada!", "bob: hello from bob", "ada: hi from the browser",
                  "bob left", "the server is stopping")]
        self.assertEqual(order, sorted(order), f"events out of order: {log}")
        self.assertEqual(browser.errors(), [], "JavaScript errors on the page")
        self.assertIn("ada joined from 127.0.0.1:", server.out.decode(), server.describe())


@needs_chromium
class Screenshot(BrowserTestCase):
    """Only with --screenshot PATH: a short friendly chat, saved as a PNG (docs/chat-page.png)."""

    def test_screenshot_of_a_chat(self):
        _, port = self.start_server()
        bob = self.client(port, "bob")
        browser = self.start_browser()
        self.join_as(browser, port, "ada")
        bob.wait_for("server > ada joined\n")
        bob.send("hi ada! welcome to the chat\n")
        self.wait_line(browser, "msg", r"welcome to the chat")
        self.say(browser, "thanks, bob! I'm in a browser, on the same port as you")
        bob.wait_for("\nada > thanks, bob!", timeout=WAIT)
        bob.send("and I'm in a terminal. one room for both of us\n")
        self.wait_line(browser, "msg", r"one room for both of us")
        browser.evaluate("document.fonts.ready.then(() => true)", wait=True)
        png = browser.screenshot()
        self.assertEqual(png_size(png), (WIDTH, HEIGHT))
        os.makedirs(os.path.dirname(os.path.abspath(SCREENSHOT)), exist_ok=True)
        with open(SCREENSHOT, "wb") as f:
            f.write(png)
        print(f"\nsaved {SCREENSHOT} ({len(png)} bytes, {WIDTH}x{HEIGHT})", file=sys.stderr)


def load_tests(loader, tests, pattern):
    """The Screenshot test runs only with --screenshot PATH."""
    suite = unittest.TestSuite()
    for case in (ChatPage, Screenshot) if SCREENSHOT else (ChatPage,):
        suite.addTests(loader.loadTestsFromTestCase(case))
    return suite


if __name__ == "__main__":
    if "--screenshot" in sys.argv:
        at = sys.argv.index("--screenshot")
        if at + 1 >= len(sys.argv):
            sys.exit("usage: e2e_browser.py [--screenshot PATH] [test names]")
        SCREENSHOT = os.path.abspath(sys.argv[at + 1])  # the tests run in a directory of their own
        del sys.argv[at:at + 2]
    main(__name__, {"server": DEMO_SERVER, "client": DEMO_CLIENT, "browser": [CHROMIUM]})
