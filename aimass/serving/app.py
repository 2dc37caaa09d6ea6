"""The HTTP application (Starlette on uvicorn): routes, auth, body limits, and running it in the foreground or in a
background thread."""
from __future__ import annotations

import asyncio
import dataclasses
import functools
import hmac
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
import prometheus_client
import torch
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aimass.canary.traffic import ShadowRunner, choose_model
from aimass.capture.feedback import InvalidFeedback, parse_feedback_body
from aimass.capture.records import Label, check_request_id
from aimass.capture.store import open_capture_store
from aimass.capture.writer import AnsweredRequest, CaptureWriter, is_sampled
from aimass.config import AimassConfig, ServingConfig
from aimass.data.preprocess import ImageDecodeError, decode_uploads_with_sources, tensor_sources
from aimass.monitoring.live import InvalidLabels, LiveMonitor, UnknownRequest
from aimass.serving import protocol as oip
from aimass.serving.batcher import Predictor
from aimass.serving.errors import ServingError
from aimass.serving.metrics import ServerMetrics
from aimass.serving.page import model_page_html
from aimass.serving.holder import ModelHolder, ReleaseFollower
from aimass.serving.sources import ModelSource
from aimass.polling import poll_until

TOKEN_ENV = "AIMASS_SERVING_TOKEN"
JSON = "application/json"
REQUEST_ID_HEADER = "x-request-id"
MODEL_VERSION_HEADER = "x-model-version"  # the version that answered: production's or a canary candidate's
MAX_FEEDBACK_BYTES = 1 << 20  # labels are short: a megabyte holds thousands
log = logging.getLogger("aimass.serving")


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


def create_app(model_name: str, source: ModelSource, config: AimassConfig, token: str | None = None) -> Starlette:
    """The ASGI application. The release follower, the capture writer and the monitor start and stop with it."""
    settings = config.serving
    metrics = ServerMetrics()
    holder = ModelHolder(model_name, source, settings, metrics)
    follower = ReleaseFollower(holder, settings.poll_seconds)
    predictor = Predictor(holder, settings, metrics)
    writer = _capture_writer(config, model_name, metrics)
    monitor = LiveMonitor(model_name, config, metrics, lambda: holder.current,
                          lambda: holder.canary.model if holder.canary else None) \
        if settings.monitor.enabled else None
    shadow = ShadowRunner(metrics, monitor, config.release.canary.max_shadow_queue)
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
        canary = holder.canary
        body["parameters"].update({"release_revision": served.revision, "load_error": holder.last_error,
                                   "preprocessing": served.input_spec.to_dict(), **served.about,
                                   "canary": None if canary is None else {
                                       "version": canary.model.version, "weight": canary.weight,
                                       "shadow": canary.shadow, "step": canary.step, "mirror": canary.mirror}})
        return JSONResponse(body)

    async def model_ready(request: Request) -> Response:
        started = time.perf_counter()
        if refused := check_model(request, "ready", started):
            return refused
        return Response(b'{"name":"%s","ready":true}' % model_name.encode(), media_type=JSON)

    limits = oip.RequestLimits(settings.max_images_per_request, settings.max_image_bytes)

    async def answer(request: Request, route: str, parse, render) -> Response:
        """Read, parse (`parse(body, model)`), decode uploaded images, predict, `render(served, parsed, probs)`;
        every problem of the request becomes a 4xx that says what was wrong. Every answer carries a request id."""
        started = time.perf_counter()
        if refused := check_model(request, route, started):
            return refused
        current = holder.current
        try:
            parsed = parse(await _read_limited(request, settings.max_body_bytes), current)
            request_id = _request_id(parsed.request_id, request.headers.get(REQUEST_ID_HEADER))
            if parsed.images is not None:
                images, sources = parsed.images, None
            else:
                images, sources = await asyncio.get_running_loop().run_in_executor(
                    None, decode_uploads_with_sources, parsed.encoded, current.input_spec, settings.max_image_pixels)
        except _BodyTooLarge:
            return respond(route, 413, oip.error_body(
                f"the request body exceeds {settings.max_body_bytes} bytes; send fewer images per request"), started)
        except oip.InvalidRequest as error:
            return respond(route, error.status, oip.error_body(str(error)), started)
        except ImageDecodeError as error:
            return respond(route, 400, oip.error_body(str(error)), started)
        chosen, background = choose_model(current, holder.canary, request_id)
        try:
            served, probabilities = await predictor.predict(images, chosen)
        except Exception:  # noqa: BLE001 (the model failed on valid input: a 500 counted against its version)
            log.exception("%s %s failed to answer request %s", model_name, chosen.version, request_id)
            metrics.model_requests.labels(chosen.version, "500").inc()
            response = respond(route, 500, oip.error_body(
                f"{model_name} {chosen.version} failed to answer; the server log has the details"), started)
            response.headers[MODEL_VERSION_HEADER] = chosen.version
            return response
        response = respond(route, 200, render(served, dataclasses.replace(parsed, request_id=request_id),
                                              probabilities), started)
        response.headers[REQUEST_ID_HEADER] = request_id
        response.headers[MODEL_VERSION_HEADER] = served.version
        metrics.model_requests.labels(served.version, "200").inc()
        metrics.model_latency.labels(served.version).observe(time.perf_counter() - started)
        _record(request_id, served, parsed, images, sources, probabilities, started, background)
        return response

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
            lambda served, parsed, probabilities: oip.v1_response(probabilities, served.class_names, parsed.top_k,
                                                                  served.version))

    def _record(request_id, served, parsed, images, sources, probabilities, started, background) -> None:
        """Hand the answer to capture, the monitor and a canary's background model; whatever goes wrong there, the
        answer is already made."""
        try:
            sources = sources if sources is not None else tensor_sources(images)
            if writer is not None and is_sampled(request_id, settings.capture.sample_rate):
                writer.offer(AnsweredRequest(request_id, time.time(), model_name, served.version, served.revision,
                                             (time.perf_counter() - started) * 1000, probabilities,
                                             served.class_names, parsed.encoded,
                                             images if parsed.encoded is None else None))
            if monitor is not None:
                monitor.observe(request_id, served, images, sources, probabilities)
            if background is not None:
                shadow.offer(request_id, background, images, sources, probabilities)
        except Exception:  # noqa: BLE001
            log.exception("capture or monitoring of request %s failed; the request was answered", request_id)

    async def feedback(request: Request) -> Response:
        started = time.perf_counter()
        if refused := check_model(request, "feedback", started):
            return refused
        if monitor is None:
            return respond("feedback", 409, oip.error_body(
                "feedback needs the monitor: serving.monitor.enabled is false on this server"), started)
        try:
            items = parse_feedback_body(await _read_limited(request, MAX_FEEDBACK_BYTES))
            for request_id, names in items:  # all checked before any is applied: a batch is taken whole or not
                monitor.label(request_id, names, apply=False)
        except _BodyTooLarge:
            return respond("feedback", 413, oip.error_body(
                f"a feedback body holds at most {MAX_FEEDBACK_BYTES} bytes; send the labels in several requests, or "
                "import them in bulk with `aimass feedback import`"), started)
        except (InvalidFeedback, InvalidLabels) as error:
            return respond("feedback", 400, oip.error_body(str(error)), started)
        except UnknownRequest as error:
            return respond("feedback", 404, oip.error_body(str(error)), started)
        for request_id, names in items:
            version = monitor.label(request_id, names)
            if writer is not None:
                writer.offer(Label(request_id, time.time(), tuple(names), version, "api"))
        return respond("feedback", 200, orjson.dumps({"accepted": len(items)}), started)

    async def monitor_view(request: Request) -> Response:
        started = time.perf_counter()
        if refused := check_model(request, "monitor", started):
            return refused
        if monitor is None:
            return respond("monitor", 409, oip.error_body("serving.monitor.enabled is false on this server"),
                           started)
        report = await asyncio.get_running_loop().run_in_executor(None, monitor.report)
        return respond("monitor", 200, orjson.dumps(report), started)

    async def page(request: Request) -> Response:
        # The page holds no model data: its script asks /v2/models/{name} (with the token, when one is set).
        return Response(model_page_html(model_name), media_type="text/html; charset=utf-8")

    async def metrics_endpoint(request: Request) -> Response:
        return Response(prometheus_client.generate_latest(metrics.registry),
                        media_type=prometheus_client.CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(app: Starlette):
        await asyncio.get_running_loop().run_in_executor(None, follower.start)
        for background in (writer, monitor, shadow):
            if background is not None:
                background.start()
        yield
        follower.stop()
        predictor.close()
        for background in (shadow, monitor, writer):  # the writer last: it writes what is queued before it stops
            if background is not None:
                await asyncio.get_running_loop().run_in_executor(None, background.stop)

    app = Starlette(routes=[
        Route("/", page),
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/v2", server_metadata),
        Route("/v2/models/{name}", model_metadata),
        Route("/v2/models/{name}/ready", model_ready),
        Route("/v2/models/{name}/infer", infer, methods=["POST"]),
        Route("/v1/models/{name}:predict", predict_v1, methods=["POST"]),
        Route("/v2/models/{name}/feedback", feedback, methods=["POST"]),
        Route("/v2/models/{name}/monitor", monitor_view),
        Route("/metrics", metrics_endpoint),
    ], lifespan=lifespan)
    app.state.holder = holder
    app.state.monitor = monitor
    app.state.writer = writer
    app.state.shadow = shadow
    return app


def _capture_writer(config: AimassConfig, model_name: str, metrics: ServerMetrics) -> CaptureWriter | None:
    """The capture writer, or None with capture off. A store that cannot even be opened (no credentials) turns
    capture off with an error in the log: the server still serves."""
    settings = config.serving.capture
    if settings.sample_rate == 0:
        return None
    try:
        store = open_capture_store(config, model_name)
    except Exception as error:  # noqa: BLE001
        log.error("capture is off: %s", error)
        return None
    return CaptureWriter(store, settings, metrics.capture_written, metrics.capture_dropped)


def _request_id(given: str | None, header: str | None) -> str:
    """The OIP request's `id`, else the caller's x-request-id, else a new one."""
    chosen = given if given is not None else header
    if chosen is None:
        return uuid.uuid4().hex
    try:
        return check_request_id(chosen)
    except ValueError as error:
        raise oip.InvalidRequest(f"request id {chosen[:40]!r}: {error}") from None


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
    app = create_app(model_name, source, config, read_token(settings))
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

    @property
    def monitor(self) -> LiveMonitor | None:
        return self.app.state.monitor

    @property
    def shadow(self) -> ShadowRunner:
        return self.app.state.shadow


@contextmanager
def running_server(model_name: str, source: ModelSource, config: AimassConfig,
                   token: str | None = None) -> Iterator[RunningServer]:
    """A server on a free port of `serving.host`, in a background thread, for as long as the block runs
    (the deploy smoke test and tests use it)."""
    settings = config.serving
    app = create_app(model_name, source, config, token)
    server = _uvicorn_server(app)
    sock = _bind(settings.host, 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="aimass-server", daemon=True)
    thread.start()
    def started() -> bool | None:
        if not thread.is_alive():
            raise ServingError("the model server did not start; see the log above")
        return True if server.started else None

    poll_until(started, 60, 0.01, lambda: ServingError("the model server did not start within 60 s; see the log above"))
    try:
        yield RunningServer(f"http://{settings.host}:{sock.getsockname()[1]}", app)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()

