"""Open a page in headless Chromium (Debian's `chromium`) over the DevTools protocol and report what a person would
see broken: resources that failed to load, images that did not decode, script errors and console errors."""
import json
import os
import re
import signal
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from websockets.sync.client import connect


@dataclass(frozen=True)
class PageReport:
    failed_requests: list[str]  # URLs that did not load
    broken_images: list[str]  # <img> that did not decode
    script_errors: list[str]  # uncaught exceptions and console errors
    text: str  # the page's visible text

    @property
    def problems(self) -> list[str]:
        return self.failed_requests + self.broken_images + self.script_errors


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def open_page(html_file: Path, settle_seconds: float = 0.5, timeout: float = 60) -> PageReport:
    """Load `html_file` (as a .html file URL) and report what broke."""
    # Chromium's helper processes may still be writing their profile as the folder is removed.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as scratch:
        page = Path(scratch) / "page.html"  # artifacts have no extension; the browser must treat them as HTML
        shutil.copyfile(html_file, page)
        return _in_browser(scratch, page.as_uri(), settle_seconds, timeout)


def open_url(url: str, upload: Path | None = None, settle_seconds: float = 1.0, timeout: float = 60) -> PageReport:
    """Load `url` (a page on 127.0.0.1), pick `upload` in its file input as a person would, and report what broke
    and what the page shows then."""
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as scratch:
        return _in_browser(scratch, url, settle_seconds, timeout, upload)


def _in_browser(scratch: str, url: str, settle_seconds: float, timeout: float,
                upload: Path | None = None) -> PageReport:
    browser = subprocess.Popen(
        # No name resolves: whatever the page would fetch from elsewhere fails here, as in an offline cluster,
        # and nothing leaves this machine.
        [chromium_path(), "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
         f"--user-data-dir={scratch}/profile", "--no-first-run", "about:blank"],
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        port = _devtools_port(browser, timeout)
        return _inspect(port, url, settle_seconds, timeout, upload)
    finally:
        os.killpg(browser.pid, signal.SIGKILL)  # the browser and its helper processes
        browser.wait()


def _devtools_port(browser: subprocess.Popen, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = browser.stderr.readline()
        if match := re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line):
            return int(match.group(1))
        if not line and browser.poll() is not None:
            break
    raise RuntimeError("chromium did not start its DevTools endpoint")


def _inspect(port: int, url: str, settle_seconds: float, timeout: float, upload: Path | None = None) -> PageReport:
    targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
    socket_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
    requests, failed, errors = {}, [], []
    with connect(socket_url, max_size=None, open_timeout=timeout) as devtools:
        counter = iter(range(1, 10**6))

        def send(method: str, **params) -> int:
            identifier = next(counter)
            devtools.send(json.dumps({"id": identifier, "method": method, "params": params}))
            return identifier

        def pump(until_seconds: float, wait_for: int | str | None = None):
            end = time.monotonic() + until_seconds
            while time.monotonic() < end:
                try:
                    message = json.loads(devtools.recv(timeout=max(0.01, end - time.monotonic())))
                except TimeoutError:
                    return None
                method, params = message.get("method"), message.get("params", {})
                if method == "Network.requestWillBeSent":
                    requests[params["requestId"]] = params["request"]["url"]
                elif method == "Network.loadingFailed":
                    failed.append(f"{requests.get(params['requestId'], '?')[:120]}: {params.get('errorText')}")
                elif method == "Runtime.exceptionThrown":
                    errors.append(params["exceptionDetails"].get("exception", {}).get("description", "exception"))
                elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
                    errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
                elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                    errors.append(params["entry"]["text"])
                if wait_for is not None and (message.get("id") == wait_for or method == wait_for):
                    return message
            return None

        for domain in ("Network.enable", "Runtime.enable", "Log.enable", "Page.enable"):
            pump(timeout, send(domain))
        send("Page.navigate", url=url)
        if pump(timeout, "Page.loadEventFired") is None:
            raise RuntimeError(f"{url} did not finish loading within {timeout} s")
        pump(settle_seconds)
        if upload is not None:
            root = pump(timeout, send("DOM.getDocument"))["result"]["root"]["nodeId"]
            node = pump(timeout, send("DOM.querySelector", nodeId=root, selector="input[type=file]"))["result"]
            pump(timeout, send("DOM.setFileInputFiles", files=[str(upload)], nodeId=node["nodeId"]))
            pump(settle_seconds)
        broken = pump(timeout, send("Runtime.evaluate", returnByValue=True, expression=(
            "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)"
            ".map(i => 'image ' + i.src.slice(0, 80))")))["result"]["result"]["value"]
        text = pump(timeout, send("Runtime.evaluate", returnByValue=True,
                                  expression="document.body.innerText"))["result"]["result"]["value"]
    return PageReport(failed, broken, errors, text)
