"""Browser journeys: Playwright's Python client driving Debian's ``chromium``.

Playwright cannot download its own browser build here, so it launches the system
executable (``WXB_CHROMIUM``, else ``chromium`` on the PATH). Without one the
journeys are deselected and the run ends with one line saying how to install it;
``WXB_REQUIRE_BROWSER=1`` (set by ``.ci/run``) turns that into an error.

Each journey gets a fresh Chromium, its own database and an in-process server
(``server_url``), so journeys share nothing. A failing journey leaves a
screenshot and the page's HTML under ``var/browser-failures/``.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.conftest import ADMIN_PASSWORD

FAILURES = Path(__file__).resolve().parents[2] / "var" / "browser-failures"
INSTALL_HINT = ("browser journeys not run: no Chromium found; install Debian's "
                "`apt-get install chromium fonts-noto-cjk` (or set WXB_CHROMIUM) to run them")
# The flags that keep Chromium off the network it cannot reach and out of the
# sandbox it cannot set up as root in a container.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]


def chromium_executable() -> str | None:
    explicit = os.environ.get("WXB_CHROMIUM", "").strip()
    if explicit:
        return explicit if Path(explicit).is_file() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _playwright_importable() -> bool:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return False
    return True


BROWSER_READY = chromium_executable() is not None and _playwright_importable()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if BROWSER_READY:
        return
    if os.environ.get("WXB_REQUIRE_BROWSER") == "1":
        raise pytest.UsageError(INSTALL_HINT)
    journeys = [item for item in items if "tests/browser/" in item.nodeid]
    if journeys:
        config.hook.pytest_deselected(items=journeys)
        items[:] = [item for item in items if item not in journeys]
        config.stash[_MISSING] = True


_MISSING = pytest.StashKey[bool]()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if config.stash.get(_MISSING, False):
        terminalreporter.write_line(INSTALL_HINT, yellow=True)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator:
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


_CALL_FAILED = pytest.StashKey[bool]()


@pytest.fixture
async def browser() -> AsyncIterator:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=chromium_executable(),
                                                    args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def page(browser, server_url: str, request: pytest.FixtureRequest) -> AsyncIterator:
    """A tab on the test's server that fails the journey on any script error."""
    context = await browser.new_context(base_url=server_url, locale="zh-CN",
                                        timezone_id="Asia/Shanghai",
                                        viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    tab = await context.new_page()
    script_errors: list[str] = []
    tab.on("pageerror", lambda error: script_errors.append(str(error)))
    # A page a journey opens may answer 403 on purpose; what it loads (scripts, styles,
    # images, the favicon, JSON it fetches) may not fail.
    tab.on("console", lambda message: message.type == "error"
           and not message.text.startswith("Failed to load resource")
           and script_errors.append(f"console: {message.text}"))
    tab.on("response", lambda response: response.status >= 400
           and response.request.resource_type != "document"
           and script_errors.append(f"{response.status} for {response.url}"))
    try:
        yield tab
    finally:
        if request.node.stash.get(_CALL_FAILED, False):
            await save_failure(tab, request.node.nodeid)
        await context.close()
    assert not script_errors, f"script errors or failed loads on the page: {script_errors}"


async def save_failure(tab, nodeid: str) -> None:
    FAILURES.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.split("::", 1)[-1])[:120]
    try:
        await tab.screenshot(path=str(FAILURES / f"{stem}.png"), full_page=True)
        (FAILURES / f"{stem}.html").write_text(await tab.content(), encoding="utf-8")
    except Exception as error:  # a crashed tab: say so rather than hide the journey's failure
        (FAILURES / f"{stem}.txt").write_text(f"no screenshot: {error!r}\n", encoding="utf-8")


async def login(tab, username: str, password: str = ADMIN_PASSWORD) -> None:
    """Log in through the form as a user would, landing on their home page."""
    await tab.goto("/admin/login")
    await tab.get_by_label("用户名").fill(username)
    await tab.get_by_label("密码").fill(password)
    await tab.get_by_role("button", name="登录").click()
    await tab.wait_for_url(re.compile(r"/admin/(?!login)"))
