"""The model server: Open Inference Protocol v2 over REST (Starlette on uvicorn), Prometheus metrics, and a model
that follows the release pointer.

Why not KServe's ModelServer: `bench/serving.py` measures both serving the same model on the same machine; this
leaner stack is what that measurement chose (figures in docs/PERFORMANCE.md). KServe's own client still works
against it unchanged (tests/integration/test_serving.py).

Model updates: a background thread asks the model source (normally the release backend) which version should be
served. When that changes it pulls the version (sha256 of every file checked against the registry record), loads
it (sha256 manifest checked again), runs a warm-up prediction, and only then swaps the reference requests read.
A request reads the reference once, so requests in flight finish on the model they started with. If anything
fails, the old model keeps serving and the error is reported on /v2/models/{name}, in /metrics and in the log;
the failed version is retried after `serving.load_retry_seconds` (a store may only be down for a while).
"""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import hmac
import logging
import os
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import prometheus_client
import torch
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aimass import oip
from aimass.model_page import model_page_html
from aimass.config import AimassConfig, ServingConfig
from aimass.data.preprocess import ImageDecodeError, InputSpec, decode_uploads, to_model_input
from aimass.errors import AimassError, ArtifactIntegrityError
from aimass.integrity import sha256_file
from aimass.model_artifact import EXPORT_FORMAT, load_model
from aimass.registry import ModelRegistry, ModelVersion, manifest_sha256, open_registry, open_registry_at
from aimass.releases import ReleaseError, open_release_backend

log = logging.getLogger("aimass.serving")
TOKEN_ENV = "AIMASS_SERVING_TOKEN"
JSON = "application/json"


class ServingError(AimassError):
    """The server cannot start as configured (no token in the token file, a port in use, ...)."""


# ---------------------------------------------------------------------------------------------------------------
# The served model and where it comes from
# ---------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str  # registry version ("v3"), or "local" for a directory served as is
    revision: int | None  # the release revision that asked for it
    module: torch.nn.Module
    class_names: list[str]
    input_spec: InputSpec
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    about: dict = dataclasses.field(default_factory=dict)  # from the model card: data set, lineage, training

    @torch.inference_mode()
    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, C, H, W) -> class probabilities (N, classes), float32."""
        logits = self.module(to_model_input(images, self.input_spec, self.device))
        return torch.softmax(logits.float(), dim=1).cpu().numpy()


def inference_device(wanted: str, weights_format: str) -> torch.device:
    """`serving.device` for this model: int8 exports run x86 kernels, so only float models go to a GPU."""
    int8 = weights_format == EXPORT_FORMAT
    if wanted == "cuda":
        if int8:
            raise ServingError("serving.device=cuda, but this is an int8 model, whose kernels run on the CPU only; "
                               "use serving.device=auto or cpu")
        if not torch.cuda.is_available():
            raise ServingError("serving.device=cuda, but torch sees no CUDA device here; use auto or cpu")
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() and not int8 else "cpu"
    return torch.device(wanted)


def load_served_model(name: str, version: str, revision: int | None, model_dir: Path,
                      compile_quantized: bool = True, device: str = "cpu") -> ServedModel:
    """Load a model directory (every sha256 checked) and prove it answers before anyone is sent to it.

    int8 models are compiled, as the compress stage measured them: eager execution of a quantised export runs
    the reference (de)quantise ops and is about 10x slower at batch 1 than the compiled int8 kernels
    (docs/PERFORMANCE.md). Compiling takes seconds, all of it here, in the warm-up, before the swap."""
    loaded = load_model(model_dir)
    weights_format = loaded.card.get("weights_format", "")
    target = inference_device(device, weights_format)
    module = loaded.module if target.type == "cpu" else loaded.module.to(target)
    if compile_quantized and weights_format == EXPORT_FORMAT:
        module = torch.compile(module, dynamic=True)
    signature = loaded.signature
    card = loaded.card
    # A compressed model's card carries its teacher's training record, not a validation score of its own.
    measured_on = "this model" if "training" in card else "its teacher"
    about = {"dataset": card.get("dataset", {}).get("name"), "lineage": card.get("lineage", {}),
             "validation_accuracy": card.get("training", card.get("teacher_training", {})).get("best_validation_accuracy"),
             "validation_accuracy_of": measured_on, "compression": card.get("compression", {}).get("method")}
    served = ServedModel(name, version, revision, module, list(signature.class_names), signature.input_spec, target,
                         about)
    # The compiler specialises batch size 1 and guards int8 graphs to 2..15 and 16 and up: one warm-up per range,
    # or the first request of a new range stalls every request behind it for a recompilation (seconds).
    for batch in (1, 2, 16):
        warm_up = served.predict(np.zeros((batch, *signature.input_spec.shape), dtype=np.uint8))
        if warm_up.shape != (batch, len(served.class_names)) or not np.isfinite(warm_up).all():
            raise ArtifactIntegrityError(f"{name} {version} failed its warm-up prediction: got {warm_up.shape}")
    return served


@dataclass(frozen=True)
class WantedModel:
    version: str
    revision: int | None
    fetch: Callable[[], Path]  # returns a local, verified model directory


class ModelSource(ABC):
    @abstractmethod
    def wanted(self) -> WantedModel | None:
        """The model that should be served now; None while there is none (nothing deployed yet)."""


class ReleaseSource(ModelSource):
    """Serve whatever the current revision of the release points to, pulled from the registry."""

    def __init__(self, config: AimassConfig, dataset_name: str | None = None):
        self.registry = open_registry(config, dataset_name)
        self.backend = open_release_backend(config, self.registry)
        self.cache = RegistryCache(self.registry, Path(config.data.repo_dir) / config.serving.cache_dir)

    def wanted(self) -> WantedModel | None:
        try:
            revision = self.backend.status()
        except ReleaseError:
            return None
        return WantedModel(revision.model_version, revision.revision,
                           lambda: self.cache.fetch(revision.model_version))


class FixedVersionSource(ModelSource):
    """Serve one registry version: named on the command line, or pinned by a Helm revision as a storage URI plus
    the sha256 of the version's manifest (a registry whose record or files differ from that digest is refused)."""

    def __init__(self, registry: ModelRegistry, cache: RegistryCache, version_or_alias: str,
                 expected_manifest_sha256: str | None = None):
        self.registry = registry
        self.cache = cache
        self.version_or_alias = version_or_alias
        self.expected_manifest_sha256 = expected_manifest_sha256

    def wanted(self) -> WantedModel:
        version = self.registry.resolve(self.version_or_alias)
        return WantedModel(version, None, lambda: self._fetch(version))

    def _fetch(self, version: str) -> Path:
        expected = self.expected_manifest_sha256
        if expected is not None and (recorded := manifest_sha256(self.registry.get(version))) != expected:
            raise ArtifactIntegrityError(
                f"{self.registry.model_name} {version} in {self.registry.store.description} has a manifest sha256 of "
                f"{recorded}, but {expected} was pinned: refusing it (was the version re-uploaded, or the URI "
                "mixed up?)")
        return self.cache.fetch(version)  # every file against the record, and so against the pinned manifest


class DirectorySource(ModelSource):
    """Serve a model directory as it is (its own sha256 manifest is still checked)."""

    def __init__(self, model_dir: Path, version: str = "local"):
        self.model_dir = model_dir
        self.version = version

    def wanted(self) -> WantedModel:
        return WantedModel(self.version, None, lambda: self.model_dir)


class RegistryCache:
    """Pulled versions under `<cache>/<version>/`; a cached copy is reused only if every file still matches the
    registry record's sha256."""

    def __init__(self, registry: ModelRegistry, cache_dir: Path):
        self.registry = registry
        self.cache_dir = cache_dir

    def fetch(self, version: str) -> Path:
        target = self.cache_dir / self.registry.model_name / version
        record = self.registry.get(version)
        if not self._is_intact(target, record):
            self.registry.pull(version, target)
        return target

    @staticmethod
    def _is_intact(directory: Path, record: ModelVersion) -> bool:
        return directory.is_dir() and all(
            (directory / name).is_file() and sha256_file(directory / name) == digest
            for name, digest in record.files.items())


class ModelHolder:
    """The model requests are answered with, and the swap to a new one."""

    KEEP_LOADED = 2  # the current model and the one before it, so that a rollback swaps at once

    def __init__(self, model_name: str, source: ModelSource, settings: ServingConfig, metrics: ServerMetrics):
        self.model_name = model_name
        self.source = source
        self.settings = settings
        self.retry_seconds = settings.load_retry_seconds
        self.metrics = metrics
        self.current: ServedModel | None = None
        self.last_error: str | None = None
        self._failed_at: dict[tuple[str, int | None], float] = {}
        self._recent: dict[str, ServedModel] = {}  # version -> loaded model, most recent last

    def refresh(self) -> None:
        """Load and swap in the wanted model if it differs from the current one. Never raises: a failure leaves
        the current model serving and is reported."""
        try:
            wanted = self.source.wanted()
        except Exception as error:  # noqa: BLE001 (store or release backend unreachable: keep serving)
            self._report(f"cannot tell which model to serve: {error}")
            return
        current = self.current
        if wanted is None or (current and (current.version, current.revision) == (wanted.version, wanted.revision)):
            return
        key = (wanted.version, wanted.revision)
        if time.monotonic() - self._failed_at.get(key, -float("inf")) < self.retry_seconds:
            return
        if wanted.version in self._recent:  # e.g. a rollback: verified and warmed when it was first loaded
            loaded = self._recent[wanted.version]
            self._swap(dataclasses.replace(loaded, revision=wanted.revision))
            return
        try:
            served = load_served_model(self.model_name, wanted.version, wanted.revision, wanted.fetch(),
                                       self.settings.compile_quantized, self.settings.device)
        except Exception as error:  # noqa: BLE001 (whatever breaks the new model, the old one keeps serving)
            self._failed_at[key] = time.monotonic()
            self.metrics.model_loads.labels(outcome="failure").inc()
            keeping = f"; still serving {current.version}" if current else ""
            self._report(f"version {wanted.version} (revision {wanted.revision}) was not loaded: {error}{keeping}")
            return
        self.metrics.model_loads.labels(outcome="success").inc()
        self._swap(served)

    def _swap(self, served: ServedModel) -> None:
        previous, self.current, self.last_error = self.current, served, None
        self._recent.pop(served.version, None)
        self._recent[served.version] = served
        while len(self._recent) > self.KEEP_LOADED:
            del self._recent[next(iter(self._recent))]
        # A loaded (and especially a compiled) model is a large, long-lived object graph; left to the collector,
        # every full collection walks it, stalling all requests for hundreds of ms (seen as p99 spikes under
        # load). Frozen objects are never scanned.
        gc.collect()
        gc.freeze()
        self.metrics.show_model(served, previous)
        log.info("serving %s %s (revision %s)", served.name, served.version, served.revision)

    def _report(self, message: str) -> None:
        if message != self.last_error:
            log.error(message)
        self.last_error = message


class ReleaseFollower:
    """Polls the model source from a daemon thread."""

    def __init__(self, holder: ModelHolder, poll_seconds: float):
        self.holder = holder
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aimass-release-follower", daemon=True)

    def start(self) -> None:
        self.holder.refresh()  # the first model loads before the server says it is ready
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            self.holder.refresh()


# ---------------------------------------------------------------------------------------------------------------
# Metrics and inference scheduling
# ---------------------------------------------------------------------------------------------------------------

class ServerMetrics:
    """Prometheus metrics in a registry of their own (several servers may share a process, as in tests)."""

    def __init__(self):
        self.registry = prometheus_client.CollectorRegistry()
        self.requests = prometheus_client.Counter(
            "aimass_requests", "HTTP requests by route and status code", ["route", "code"], registry=self.registry)
        self.latency = prometheus_client.Histogram(
            "aimass_request_duration_seconds", "Time to answer a request", ["route"], registry=self.registry,
            buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .2, .5, 1, 2, 5))
        self.batch_size = prometheus_client.Histogram(
            "aimass_inference_batch_images", "Images per forward pass", registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024))
        self.model_info = prometheus_client.Gauge(
            "aimass_model_info", "1 for the model version being served", ["model", "version", "revision"],
            registry=self.registry)
        self.model_loads = prometheus_client.Counter(
            "aimass_model_loads", "Attempts to load a new model version", ["outcome"], registry=self.registry)

    def show_model(self, served: ServedModel, previous: ServedModel | None) -> None:
        if previous is not None:
            self.model_info.remove(previous.name, previous.version, str(previous.revision))
        self.model_info.labels(served.name, served.version, str(served.revision)).set(1)


class Predictor:
    """Runs forward passes on worker threads (torch releases the GIL), optionally merging concurrent requests."""

    def __init__(self, holder: ModelHolder, settings: ServingConfig, metrics: ServerMetrics):
        self.holder = holder
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(settings.inference_threads, thread_name_prefix="aimass-inference",
                                           initializer=torch.set_num_threads, initargs=(1,))
        self.batching = settings.dynamic_batching
        self.max_batch_size = settings.max_batch_size
        self.max_delay = settings.max_batch_delay_ms / 1000
        self._queue: asyncio.Queue | None = None
        self._batcher: asyncio.Task | None = None

    async def predict(self, images: np.ndarray) -> tuple[ServedModel, np.ndarray]:
        if not self.batching:
            served = self.holder.current  # read once: a swap during this request does not affect it
            self.metrics.batch_size.observe(len(images))
            probabilities = await asyncio.get_running_loop().run_in_executor(self.executor, served.predict, images)
            return served, probabilities
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._batcher = asyncio.create_task(self._merge_requests())
        answer: asyncio.Future = asyncio.get_running_loop().create_future()
        await self._queue.put((images, answer))
        return await answer

    async def _merge_requests(self) -> None:
        """Greedy batching: take every request that arrived while the previous forward pass ran, as long as the
        batch stays within `max_batch_size` images (a request that would overflow it opens the next batch; one
        request larger than the limit goes alone), so a lone request never waits; `max_batch_delay_ms` > 0
        additionally waits for company."""
        loop = asyncio.get_running_loop()
        carried = None  # the request that did not fit into the previous batch
        while True:
            pending = [carried or await self._queue.get()]
            carried = None
            count = len(pending[0][0])
            deadline = loop.time() + self.max_delay
            while count < self.max_batch_size:
                if not self._queue.empty():
                    candidate = self._queue.get_nowait()
                elif self.max_delay > 0 and loop.time() < deadline:
                    try:
                        candidate = await asyncio.wait_for(self._queue.get(), deadline - loop.time())
                    except TimeoutError:
                        break
                else:
                    break
                if count + len(candidate[0]) > self.max_batch_size:
                    carried = candidate
                    break
                pending.append(candidate)
                count += len(candidate[0])
            served = self.holder.current
            self.metrics.batch_size.observe(count)
            try:
                merged = np.concatenate([images for images, _ in pending])
                probabilities = await loop.run_in_executor(self.executor, served.predict, merged)
            # Inputs were validated, so this is a bug: fail these requests, keep the batcher alive.
            except Exception as error:  # noqa: BLE001
                for _, answer in pending:
                    if not answer.done():  # a client that went away cancelled its future already
                        answer.set_exception(error)
                continue
            start = 0
            for images, answer in pending:
                if not answer.done():
                    answer.set_result((served, probabilities[start:start + len(images)]))
                start += len(images)

    def close(self) -> None:
        if self._batcher is not None:
            self._batcher.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------------------------------

class _BodyTooLarge(Exception):
    pass


def read_token(settings: ServingConfig) -> str | None:
    """The bearer token from $AIMASS_SERVING_TOKEN or `serving.token_file`; None means no auth."""
    if settings.token_file:
        path = Path(settings.token_file)
        if not path.is_file():
            raise ServingError(f"serving.token_file {path} does not exist; mount the token Secret there or unset it")
        token = path.read_text().strip()
        if not token:
            raise ServingError(f"serving.token_file {path} is empty; put the bearer token in it")
        return token
    return os.environ.get(TOKEN_ENV) or None


def create_app(model_name: str, source: ModelSource, settings: ServingConfig, token: str | None = None) -> Starlette:
    """The ASGI application. The release follower starts and stops with it."""
    metrics = ServerMetrics()
    holder = ModelHolder(model_name, source, settings, metrics)
    follower = ReleaseFollower(holder, settings.poll_seconds)
    predictor = Predictor(holder, settings, metrics)
    expected_auth = f"Bearer {token}".encode() if token else None

    def respond(route: str, status: int, body: bytes, started: float) -> Response:
        metrics.requests.labels(route, str(status)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - started)
        return Response(body, status_code=status, media_type=JSON)

    def check_model(request: Request, route: str, started: float) -> Response | None:
        """A response refusing the request (auth, unknown or unloaded model), or None to go on."""
        if expected_auth is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected_auth):
                response = respond(route, 401, oip.error_body(
                    "missing or wrong bearer token: send 'Authorization: Bearer <token>'"), started)
                response.headers["WWW-Authenticate"] = "Bearer"
                return response
        name = request.path_params["name"]
        if name != model_name:
            return respond(route, 404, oip.error_body(f"no model {name!r} here; this server serves {model_name!r}"),
                           started)
        if holder.current is None:
            return respond(route, 503, oip.error_body(f"{model_name} is not loaded yet: "
                                                      f"{holder.last_error or 'nothing is deployed'}"), started)
        return None

    async def live(request: Request) -> Response:
        return Response(b'{"live":true}', media_type=JSON)

    async def ready(request: Request) -> Response:
        is_ready = holder.current is not None
        return Response(b'{"ready":true}' if is_ready else b'{"ready":false}', status_code=200 if is_ready else 503,
                        media_type=JSON)

    async def server_metadata(request: Request) -> Response:
        return JSONResponse({"name": "aimass", "version": _package_version(), "extensions": ["binary_tensor_data"]})

    async def model_metadata(request: Request) -> Response:
        started = time.perf_counter()
        if refused := check_model(request, "metadata", started):
            return refused
        served = holder.current
        body = oip.model_metadata(model_name, served.version, served.class_names, served.input_spec.shape)
        body["parameters"].update({"release_revision": served.revision, "load_error": holder.last_error,
                                   "preprocessing": served.input_spec.to_dict(), **served.about})
        return JSONResponse(body)

    async def model_ready(request: Request) -> Response:
        started = time.perf_counter()
        if refused := check_model(request, "ready", started):
            return refused
        return Response(b'{"name":"%s","ready":true}' % model_name.encode(), media_type=JSON)

    limits = oip.RequestLimits(settings.max_images_per_request, settings.max_image_bytes)

    async def answer(request: Request, route: str, parse, render) -> Response:
        """Read, parse (`parse(body, model)`), decode uploaded images, predict, `render(served, parsed, probs)`;
        every problem of the request becomes a 4xx that says what was wrong."""
        started = time.perf_counter()
        if refused := check_model(request, route, started):
            return refused
        current = holder.current
        try:
            parsed = parse(await _read_limited(request, settings.max_body_bytes), current)
            images = parsed.images if parsed.images is not None else await asyncio.get_running_loop().run_in_executor(
                None, decode_uploads, parsed.encoded, current.input_spec, settings.max_image_pixels)
        except _BodyTooLarge:
            return respond(route, 413, oip.error_body(
                f"the request body exceeds {settings.max_body_bytes} bytes; send fewer images per request"), started)
        except oip.InvalidRequest as error:
            return respond(route, error.status, oip.error_body(str(error)), started)
        except ImageDecodeError as error:
            return respond(route, 400, oip.error_body(str(error)), started)
        served, probabilities = await predictor.predict(images)
        return respond(route, 200, render(served, parsed, probabilities), started)

    async def infer(request: Request) -> Response:
        return await answer(
            request, "infer",
            lambda body, model: oip.parse_infer_request(body, request.headers.get(oip.BINARY_HEADER), limits,
                                                        model.input_spec.shape, len(model.class_names)),
            lambda served, parsed, probabilities: oip.infer_response(model_name, served.version, parsed,
                                                                     probabilities, served.class_names))

    async def predict_v1(request: Request) -> Response:
        return await answer(
            request, "predict_v1",
            lambda body, model: oip.parse_v1_request(body, limits, len(model.class_names)),
            lambda served, parsed, probabilities: oip.v1_response(probabilities, served.class_names, parsed.top_k))

    async def page(request: Request) -> Response:
        # The page holds no model data: its script asks /v2/models/{name} (with the token, when one is set).
        return Response(model_page_html(model_name), media_type="text/html; charset=utf-8")

    async def metrics_endpoint(request: Request) -> Response:
        return Response(prometheus_client.generate_latest(metrics.registry),
                        media_type=prometheus_client.CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        await asyncio.get_running_loop().run_in_executor(None, follower.start)
        yield
        follower.stop()
        predictor.close()

    app = Starlette(routes=[
        Route("/", page),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2", server_metadata),
        Route("/v2/models/{name}", model_metadata),
        Route("/v2/models/{name}/ready", model_ready),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v1/models/{name}:predict", predict_v1, methods=["POST"]),
        Route("/metrics", metrics_endpoint),
    ], lifespan=lifespan)
    app.state.holder = holder
    return app


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge  # refuse before reading a byte
    chunks, size = [], 0
    async for chunk in request.stream():  # chunked bodies carry no length: count as they arrive
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


@functools.cache  # package metadata is read from disk; it cannot change while the server runs
def _package_version() -> str:
    from importlib.metadata import version

    return version("aimass")


# ---------------------------------------------------------------------------------------------------------------
# Running it
# ---------------------------------------------------------------------------------------------------------------

def open_model_source(config: AimassConfig, model_version: str | None = None, model_dir: Path | None = None,
                      model_uri: str | None = None, model_sha256: str | None = None) -> ModelSource:
    """The source `aimass serve` was asked for: a directory, a registry version, a pinned storage URI (what the
    Helm chart passes), or else the current release."""
    if model_dir is not None:
        return DirectorySource(model_dir)
    cache_dir = Path(config.data.repo_dir) / config.serving.cache_dir
    if model_uri is not None:
        registry, version = open_registry_at(model_uri, config)
        return FixedVersionSource(registry, RegistryCache(registry, cache_dir), version, model_sha256)
    if model_version is not None:
        registry = open_registry(config)
        return FixedVersionSource(registry, RegistryCache(registry, cache_dir), model_version, model_sha256)
    return ReleaseSource(config)


def _uvicorn_server(app: Starlette) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=10,
                                         lifespan="on"))


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise ServingError(f"cannot listen on {host}:{port}: {error.strerror}; choose another "
                           "--port (or serving.port)") from None
    return sock


def serve_forever(config: AimassConfig, model_name: str, source: ModelSource,
                  on_listening: Callable[[str], None] = print) -> None:
    """Run the server for `model_name` until SIGINT/SIGTERM (uvicorn finishes requests in flight first)."""
    settings = config.serving
    app = create_app(model_name, source, settings, read_token(settings))
    sock = _bind(settings.host, settings.port)
    sock.listen(2048)  # connections made before the first model is loaded wait instead of being refused
    torch.set_num_threads(1)  # batch-1 forward passes gain nothing from intra-op threads; see PERFORMANCE.md
    on_listening(f"http://{settings.host}:{sock.getsockname()[1]}")
    _uvicorn_server(app).run(sockets=[sock])


@dataclass(frozen=True)
class RunningServer:
    url: str
    app: Starlette

    @property
    def holder(self) -> ModelHolder:
        return self.app.state.holder


@contextmanager
def running_server(model_name: str, source: ModelSource, settings: ServingConfig,
                   token: str | None = None) -> Iterator[RunningServer]:
    """A server on a free port of `settings.host`, in a background thread, for as long as the block runs
    (the deploy smoke test and tests use it)."""
    app = create_app(model_name, source, settings, token)
    server = _uvicorn_server(app)
    sock = _bind(settings.host, 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="aimass-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise ServingError("the model server did not start; see the log above")
        time.sleep(0.01)
    try:
        yield RunningServer(f"http://{settings.host}:{sock.getsockname()[1]}", app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
