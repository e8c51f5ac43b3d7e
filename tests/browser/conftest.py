"""Browser tests: Debian's Chromium driven by Playwright's sync API.

The server is a real-socket in-process Tandem (``open_test_server(real_socket=True)``)
running in a background thread with its own ``trio.run``; the test drives the
browser from the main thread with the real clock. Tests skip with a reason when
playwright or Chromium is missing (``playwright install`` is never used: it
downloads a browser).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
import trio

from runtime.testing import open_test_server
from runtime.testing.server import TestServer

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page

T = TypeVar("T")

CHROMIUM = os.environ.get("TANDEM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).parent / "artifacts"


def skip_reason() -> str | None:
    """Why browser tests cannot run here, or None."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install 'playwright>=1.50')"
    if not os.path.exists(CHROMIUM):
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    return None


SKIP = skip_reason()
needs_browser = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")


class ServerThread:
    """A Tandem test server on a free loopback port, run by ``trio.run`` in a thread."""

    def __init__(self, **overrides: Any) -> None:
        self._overrides = overrides
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="tandem-server", daemon=True)
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self.server: TestServer | None = None

    def start(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the server did not start in 30 s")
        if self._error is not None:
            raise self._error
        return self

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # reported by start() or stop()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        async with open_test_server(real_socket=True, **self._overrides) as server:
            self.server = server
            self._token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            self._ready.set()
            await self._stop.wait()

    @property
    def base_url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.node.public_port}"

    def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` in the server's trio loop and return its result."""
        return trio.from_thread.run(fn, trio_token=self._token)

    def stop(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(30)
        if self._error is not None:
            raise self._error


class Tab:
    """One browser context (a separate user) with one page; collects console errors."""

    def __init__(self, browser: Browser, label: str) -> None:
        self.label = label
        self.context: BrowserContext = browser.new_context(viewport={"width": 1280, "height": 800})
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"console.error: {message.text} ({message.location})")

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}-{self.label}.png"
        self.page.screenshot(path=str(path))
        return path

    def evaluate(self, script: str) -> Any:
        return self.page.evaluate(script)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if SKIP is not None:
        pytest.skip(SKIP)
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="tandem-chromium-") as profile:
        os.environ.setdefault("XDG_CONFIG_HOME", profile)  # keep Chromium out of $HOME
        with sync_playwright() as playwright:
            launched = playwright.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
            )
            try:
                yield launched
            finally:
                launched.close()


@pytest.fixture
def tabs(browser: Browser) -> Iterator[Callable[[str], Tab]]:
    """Open tabs (contexts) by label; closed at the end of the test."""
    opened: list[Tab] = []

    def open_tab(label: str) -> Tab:
        tab = Tab(browser, label)
        opened.append(tab)
        return tab

    yield open_tab
    for tab in opened:
        tab.context.close()
