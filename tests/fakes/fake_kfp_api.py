"""A FAKE Kubeflow Pipelines API server (v2beta1 REST) for the `aimass submit | runs | schedule` tests: no KFP backend
runs here. It accepts only what KFP's own API accepts: every request body is checked field by field against the
API's models as published in kfp-server-api (unknown fields, wrong nesting and missing required fields get a 400, as
KFP's gRPC gateway does), and it records each request for the tests to inspect.

A created run then moves PENDING -> RUNNING -> (`final_state`, SUCCEEDED by default) one step per GET, with task
details, the way a short KFP run reports itself.
"""
import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field

import kfp_server_api
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

API = "/apis/v2beta1"
REQUIRED = {  # what KFP's API server refuses to go without
    "V2beta1Run": ["display_name"],
    "V2beta1Experiment": ["display_name"],
    "V2beta1RecurringRun": ["display_name", "trigger", "mode"],
}


def model_errors(body, type_name: str, path: str = "") -> list[str]:
    """Problems of `body` as the kfp-server-api type `type_name` ('V2beta1Run', 'list[...]', 'dict(str, object)')."""
    if type_name in ("object", "str", "int", "bool", "float", "datetime") or type_name.startswith("dict("):
        return []
    if match := re.fullmatch(r"list\[(.+)\]", type_name):
        if not isinstance(body, list):
            return [f"{path or '.'}: expected a list"]
        return [e for i, item in enumerate(body) for e in model_errors(item, match.group(1), f"{path}[{i}]")]
    model = getattr(kfp_server_api, type_name)
    if hasattr(model, "allowable_values"):  # an enum: one of its names
        allowed = model.allowable_values
        return [] if body in allowed else [f"{path}: {body!r} is not one of {allowed}"]
    if not isinstance(body, dict):
        return [f"{path or '.'}: expected an object"]
    fields = {json_name: python_name for python_name, json_name in model.attribute_map.items()}
    errors = [f"{path}.{key}: unknown field of {type_name}" for key in body if key not in fields]
    errors += [f"{path}.{key}: required by {type_name}" for key in REQUIRED.get(type_name, []) if not body.get(key)]
    for key, value in body.items():
        if key in fields and value is not None:
            errors += model_errors(value, model.openapi_types[fields[key]], f"{path}.{key}")
    return errors


@dataclass
class FakeKfp:
    final_state: str = "SUCCEEDED"
    requests: list[tuple[str, str, dict]] = field(default_factory=list)  # (method, path, JSON body)
    authorizations: set[str] = field(default_factory=set)  # Authorization headers seen
    experiments: dict[str, dict] = field(default_factory=dict)
    runs: dict[str, dict] = field(default_factory=dict)
    recurring_runs: dict[str, dict] = field(default_factory=dict)
    _polls: dict[str, int] = field(default_factory=dict)

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route(f"{API}/healthz", self.healthz),
            Route(f"{API}/experiments", self.experiments_endpoint, methods=["GET", "POST"]),
            Route(f"{API}/experiments/{{id}}", self.get_experiment),
            Route(f"{API}/runs", self.runs_endpoint, methods=["GET", "POST"]),
            Route(f"{API}/runs/{{id}}", self.get_run),
            Route(f"{API}/recurringruns", self.recurring_runs_endpoint, methods=["GET", "POST"]),
            Route(f"{API}/recurringruns/{{id}}", self.recurring_run, methods=["GET", "DELETE"]),
        ])

    async def _body(self, request: Request, type_name: str) -> dict | JSONResponse:
        self.authorizations.add(request.headers.get("authorization", ""))
        body = json.loads(await request.body() or b"{}")
        self.requests.append((request.method, request.url.path, body))
        errors = model_errors(body, type_name)
        if errors:
            return JSONResponse({"error": "; ".join(errors), "code": 3}, status_code=400)
        return body

    def _log(self, request: Request) -> None:
        self.requests.append((request.method, f"{request.url.path}?{request.url.query}", {}))

    async def healthz(self, request: Request):
        return JSONResponse({"commit_sha": "fake", "tag_name": "2.5.0", "multi_user": False})

    async def experiments_endpoint(self, request: Request):
        if request.method == "POST":
            body = await self._body(request, "V2beta1Experiment")
            if isinstance(body, JSONResponse):
                return body
            experiment = {**body, "experiment_id": str(uuid.uuid4()), "created_at": _now(), "storage_state": "AVAILABLE"}
            self.experiments[experiment["experiment_id"]] = experiment
            return JSONResponse(experiment)
        self._log(request)
        wanted = _filter_value(request.query_params.get("filter"), "display_name")
        found = [e for e in self.experiments.values() if wanted is None or e["display_name"] == wanted]
        return JSONResponse({"experiments": found, "total_size": len(found)} if found else {})

    async def get_experiment(self, request: Request):
        return JSONResponse(self.experiments[request.path_params["id"]])

    async def runs_endpoint(self, request: Request):
        if request.method == "POST":
            body = await self._body(request, "V2beta1Run")
            if isinstance(body, JSONResponse):
                return body
            run = {**body, "run_id": str(uuid.uuid4()), "created_at": _now(), "state": "PENDING",
                   "storage_state": "AVAILABLE"}
            self.runs[run["run_id"]] = run
            return JSONResponse(run)
        self._log(request)
        experiment = request.query_params.get("experiment_id")
        found = [r for r in self.runs.values() if experiment in (None, r.get("experiment_id"))]  # creation order
        if "desc" in request.query_params.get("sort_by", ""):
            found.reverse()
        return JSONResponse({"runs": found, "total_size": len(found)} if found else {})

    async def get_run(self, request: Request):
        run = self.runs[request.path_params["id"]]
        polls = self._polls[run["run_id"]] = self._polls.get(run["run_id"], 0) + 1
        run["state"] = ["PENDING", "RUNNING"][polls - 1] if polls <= 2 else self.final_state
        tasks = ["ingest", "validate data", "train"][:polls]
        run["run_details"] = {"task_details": [
            {"display_name": name, "state": "SUCCEEDED" if i < len(tasks) - 1 or polls > 2 else "RUNNING",
             "task_id": f"task-{i}"} for i, name in enumerate(tasks)]}
        if polls > 2:
            run["finished_at"] = _now()
        return JSONResponse(run)

    async def recurring_runs_endpoint(self, request: Request):
        if request.method == "POST":
            body = await self._body(request, "V2beta1RecurringRun")
            if isinstance(body, JSONResponse):
                return body
            recurring = {**body, "recurring_run_id": str(uuid.uuid4()), "created_at": _now(), "status": "ENABLED"}
            self.recurring_runs[recurring["recurring_run_id"]] = recurring
            return JSONResponse(recurring)
        self._log(request)
        experiment = request.query_params.get("experiment_id")
        found = [r for r in self.recurring_runs.values() if experiment in (None, r.get("experiment_id"))]
        return JSONResponse({"recurringRuns": found, "total_size": len(found)} if found else {})

    async def recurring_run(self, request: Request):
        identifier = request.path_params["id"]
        if identifier not in self.recurring_runs:
            return JSONResponse({"error": f"recurring run {identifier} not found", "code": 5}, status_code=404)
        if request.method == "DELETE":
            self.requests.append(("DELETE", request.url.path, {}))
            del self.recurring_runs[identifier]
            return JSONResponse({})
        return JSONResponse(self.recurring_runs[identifier])


def _filter_value(filter_json: str | None, key: str) -> str | None:
    if not filter_json:
        return None
    predicates = json.loads(filter_json).get("predicates", [])
    return next((p.get("string_value") or p.get("stringValue") for p in predicates if p.get("key") == key), None)


def _now() -> str:
    nanoseconds = time.time_ns()  # one reading: seconds and fraction from the same instant
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(nanoseconds // 10**9)) + f".{nanoseconds % 10**9:09d}Z"


class RunningFakeKfp:
    """The fake on a free port of 127.0.0.1, in a background thread."""

    def __init__(self, fake: FakeKfp, port: int):
        self.fake = fake
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(fake.app(), host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)
