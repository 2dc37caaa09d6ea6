"""Serving throughput and latency: `aimass serve` (with and without dynamic batching) against KServe's stock
ModelServer serving the same model, side by side in one run, with batch-1 OIP v2 infer requests over HTTP: a
preprocessed tensor (`--payload tensor`), or one JPEG file per request (`--payload image`: both servers decode and
preprocess it with the same function).

Each server runs in its own process with one uvicorn worker and one torch thread; the load comes from wrk
(Debian's `wrk`, C, one thread) on the same machine, at 1, 16 and 64 concurrent connections. Every server first
answers the same probe image, and the labels must agree, so all serve the same model. Target (issue 4): aimass at
least 2x the stock ModelServer's requests/s with a lower p99.

    python bench/serving.py                      # newest blessed model under runs/ (from `make run`)
    python bench/serving.py --model DIR --seconds 10
    python bench/serving.py --payload image      # one JPEG per request
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL = "fashion-mnist-classifier"
CONCURRENCY = (1, 16, 64)


@dataclass(frozen=True)
class Measurement:
    server: str
    connections: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    failed: int


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_commands(model: Path, port: int, state_dir: Path) -> dict[str, list[str]]:
    aimass = [sys.executable, "-m", "aimass.cli", "serve", "--model-dir", str(model), "--port", str(port),
              "--repo", str(state_dir), "--set", f"registry.model_name={MODEL}"]
    kserve = [sys.executable, str(REPO_ROOT / "bench" / "kserve_baseline.py"), "--model_dir", str(model),
              "--http_port", str(port), "--grpc_port", str(free_port())]
    return {
        "aimass, one request per forward pass": [*aimass, "--set", "serving.dynamic_batching=false"],
        "aimass (default: dynamic batching)": aimass,
        "KServe ModelServer (stock)": kserve,
        "KServe ModelServer, request logging off": [*kserve, "--enable_latency_logging", "false",
                                                    "--configure_logging", "false"],
    }


def wait_until_ready(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} was not ready within {timeout} s")


def tensor_probe(model: Path) -> dict:
    """One request carrying one image at the model's own input shape (from its card), a fixed pattern of pixels."""
    import numpy as np

    from aimass.serving.client import tensor_request

    spec = json.loads((model / "model.json").read_text())["input"]
    shape = (1, spec["channels"], spec["height"], spec["width"])
    return tensor_request(((7 * np.arange(np.prod(shape))) % 256).astype(np.uint8).reshape(shape))


def image_probe() -> dict:
    """One request carrying a 224x224 colour JPEG (a Fashion-MNIST test image, enlarged) as base64 text."""
    import gzip
    import io

    import numpy as np
    from PIL import Image

    from aimass.serving.client import encoded_request

    pixels = np.frombuffer(gzip.open("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").read()[16:16 + 784],
                           dtype=np.uint8).reshape(28, 28)
    stream = io.BytesIO()
    Image.fromarray(pixels).resize((224, 224)).convert("RGB").save(stream, format="JPEG", quality=90)
    return encoded_request([stream.getvalue()])


def probe_label(url: str, probe: dict) -> str:
    request = urllib.request.Request(f"{url}/v2/models/{MODEL}/infer", data=json.dumps(probe).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        outputs = json.loads(response.read())["outputs"]
    return next(output for output in outputs if output["name"] == "label")["data"][0]


def run_wrk(url: str, script: Path, connections: int, seconds: int) -> dict[str, float]:
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
         f"{url}/v2/models/{MODEL}/infer"], capture_output=True, text=True, check=True).stdout
    percentiles = {p: _milliseconds(value) for p, value in re.findall(r"^\s+(50|99)%\s+(\S+)$", output, re.M)}
    failed = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    failed += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    return {"requests_per_second": float(re.search(r"Requests/sec:\s+(\S+)", output).group(1)),
            "p50_ms": percentiles["50"], "p99_ms": percentiles["99"], "failed": failed}


def _milliseconds(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def measure(name: str, command: list[str], url: str, script: Path, seconds: int,
            probe: dict, connections: tuple[int, ...] = CONCURRENCY) -> tuple[str, list[Measurement]]:
    with subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          env={**os.environ, "AIMASS_SERVING_TOKEN": ""}) as server:
        try:
            wait_until_ready(url, server)
            label = probe_label(url, probe)
            run_wrk(url, script, 16, 2)  # warm-up: connection pools, allocator, lazy imports
            results = [Measurement(name, c, **run_wrk(url, script, c, seconds)) for c in connections]
        finally:
            server.terminate()
            server.wait(timeout=30)
    return label, results


def table(results: list[Measurement]) -> str:
    lines = ["| server | connections | requests/s | p50 ms | p99 ms | failed |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.server} | {r.connections} | {r.requests_per_second:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
              f"{r.failed} |" for r in results]
    return "\n".join(lines)


def ratios(results: list[Measurement], baseline: str, prefix: str = "aimass") -> str:
    base = {r.connections: r for r in results if r.server == baseline}
    lines = [f"| server vs {baseline} | connections | requests/s ratio | p99 ratio (lower is better) |",
             "|---|---:|---:|---:|"]
    for r in results:
        if r.server.startswith(prefix) and r.server != baseline:
            b = base[r.connections]
            lines.append(f"| {r.server} | {r.connections} | {r.requests_per_second / b.requests_per_second:.2f}x | "
                         f"{r.p99_ms / b.p99_ms:.2f}x |")
    return "\n".join(lines)


def write_wrk_script(directory: Path, probe: dict) -> Path:
    """A wrk script POSTing `probe` as JSON (every request the same body, so each gets a new request id)."""
    script = directory / "infer.lua"
    script.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                      f"wrk.body = [[{json.dumps(probe)}]]\n")
    return script


def model_and_seconds(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """--model and --seconds, shared by the serving benchmarks; wrk must be here."""
    parser.add_argument("--model", type=Path, default=None, help="model directory (default: newest blessed)")
    parser.add_argument("--seconds", type=int, default=10, help="load duration per concurrency level")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: `apt-get install -y wrk` (Debian's package)")
    args.model = (args.model or newest_blessed_model()).resolve()
    return args


def newest_blessed_model() -> Path:
    found = sorted(REPO_ROOT.glob("runs/*/*/bless-model-component/blessed"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit("no blessed model under runs/: run `make run` first, or pass --model DIR")
    return found[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="model directory (default: newest blessed)")
    parser.add_argument("--seconds", type=int, default=10, help="load duration per concurrency level")
    parser.add_argument("--only", default=None, help="run only the servers whose name contains this")
    parser.add_argument("--payload", choices=["tensor", "image"], default="tensor",
                        help="a preprocessed 28x28 tensor, or one 224x224 JPEG file per request")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: `apt-get install -y wrk` (Debian's package)")
    model = (args.model or newest_blessed_model()).resolve()
    print(f"model: {model} ({json.loads((model / 'model.json').read_text())['weights_format']}); "
          f"{os.cpu_count()} CPUs; {args.seconds} s per level; wrk -t1; payload: {args.payload}", flush=True)
    probe = image_probe() if args.payload == "image" else tensor_probe(model)
    results, labels = [], {}
    with tempfile.TemporaryDirectory() as state_dir:
        script = write_wrk_script(Path(state_dir), probe)
        port = free_port()
        servers = {name: command for name, command in server_commands(model, port, Path(state_dir)).items()
                   if args.only is None or args.only in name}
        for name, command in servers.items():
            labels[name], measured = measure(name, command, f"http://127.0.0.1:{port}", script, args.seconds, probe)
            results += measured
            print("\n".join(table(measured).splitlines()[2:]), flush=True)
    if len(set(labels.values())) != 1:
        raise SystemExit(f"the servers disagree on the probe image's label: {labels}")
    print(f"\nall servers gave the probe image label {next(iter(labels.values()))}\n")
    print(table(results))
    print()
    for baseline in ("KServe ModelServer (stock)", "KServe ModelServer, request logging off"):
        if baseline in servers:
            print()
            print(ratios(results, baseline))


if __name__ == "__main__":
    main()
