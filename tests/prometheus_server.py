"""A real Prometheus (Debian's package) on loopback, scraping the given targets every 0.5 s, for as long as a block
runs: the canary's Prometheus reader and the alert rules are tested against it."""
import contextlib
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

SCRAPE_SECONDS = 0.5


@contextlib.contextmanager
def running_prometheus(workdir: Path, targets: list[str], port: int, rule_files: list[Path] = ()):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: `make prometheus` installs Debian's package (the test command does)")
    config = {"global": {"scrape_interval": f"{SCRAPE_SECONDS * 1000:.0f}ms",
                         "evaluation_interval": f"{SCRAPE_SECONDS * 1000:.0f}ms"},
              "rule_files": [str(path) for path in rule_files],
              "scrape_configs": [{"job_name": "aimass-serving", "static_configs": [{"targets": targets}]}]}
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = open(workdir / "prometheus.log", "w")
    process = subprocess.Popen([binary, f"--config.file={workdir / 'prometheus.yml'}",
                                f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                                "--web.enable-lifecycle"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not start: {(workdir / 'prometheus.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def wait_for_scrape(url: str, query: str, expected: float, seconds: float = 15) -> float:
    """The value of an instant `query` once it equals `expected` (or the last value after `seconds`)."""
    deadline, value = time.monotonic() + seconds, None
    while time.monotonic() < deadline:
        result = httpx.get(f"{url}/api/v1/query", params={"query": query}).json()["data"]["result"]
        value = float(result[0]["value"][1]) if result else None
        if value == expected:
            return value
        time.sleep(SCRAPE_SECONDS / 2)
    return value
