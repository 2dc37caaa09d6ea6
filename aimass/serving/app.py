"""The HTTP application (Starlette on uvicorn): routes, auth, body limits, and running it in the foreground or in a
background thread."""
from __future__ import annotations

import asyncio
import functools
import hmac
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import prometheus_client
import torch
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from aimass.config import AimassConfig, ServingConfig
from aimass.data.preprocess import ImageDecodeError, decode_uploads
from aimass.serving import protocol as oip
from aimass.serving.batcher import Predictor
from aimass.serving.errors import ServingError
from aimass.serving.metrics import ServerMetrics
from aimass.serving.page import model_page_html
from aimass.serving.repository import ModelHolder, ModelSource, ReleaseFollower

TOKEN_ENV = "AIMASS_SERVING_TOKEN"
JSON = "application/json"


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

