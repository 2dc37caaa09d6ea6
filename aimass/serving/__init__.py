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

Split by concern, as KServe's server is: `model` (a served model: loaded, verified, warmed up), `sources` (which
version to serve: the release, a pinned version, a directory), `cache` (pulled versions), `holder` (the swap, the
canary beside production, the thread that follows the source), `protocol` (the Open Inference Protocol v2 and KServe
v1 bodies, the server's side), `client` (the same protocol from the caller's side), `batcher` (forward passes and
dynamic batching), `metrics`, `page` (the page for people), `app` (HTTP routes, auth, running it). A protocol change
touches `protocol` and `client`; a new model source touches `sources`.
"""
from aimass.serving.app import TOKEN_ENV, RunningServer, create_app, read_token, running_server, serve_forever
from aimass.serving.batcher import Predictor
from aimass.serving.errors import ServingError
from aimass.serving.metrics import ServerMetrics
from aimass.serving.cache import RegistryCache
from aimass.serving.holder import ModelHolder
from aimass.serving.model import ServedModel, inference_device, load_served_model
from aimass.serving.sources import (DirectorySource, FixedVersionSource, ModelSource, ReleaseSource, WantedModel,
                                    open_model_source)

__all__ = ["TOKEN_ENV", "DirectorySource", "FixedVersionSource", "ModelHolder", "ModelSource", "Predictor",
           "RegistryCache", "ReleaseSource", "RunningServer", "ServedModel", "ServerMetrics", "ServingError",
           "WantedModel", "create_app", "inference_device", "load_served_model", "open_model_source", "read_token",
           "running_server", "serve_forever"]
