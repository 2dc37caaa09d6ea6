# The aimass project image: the base image of every pipeline component and the model server's image.
#
#   make image                                   # CPU torch, tagged with aimass.config.PROJECT_IMAGE
#   make image TORCH_VARIANT=cu128               # CUDA 12.8 torch (same tag; also runs the CPU stages)
#
# The project is installed as the README installs it (an editable install of this tree into a virtual
# environment), so the chart (helm/aimass-serving) and the compiled pipelines travel with the code. No secrets are
# baked in: credentials reach containers from Kubernetes Secrets at run time. No HEALTHCHECK: Kubernetes probes
# /v2/health/{live,ready} instead.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE}

# cpu or a CUDA variant of the PyTorch wheel index (cu126, cu128): torch==2.13.0 itself is pinned in pyproject.toml.
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/aimass/.venv \
    PATH=/opt/aimass/.venv/bin:$PATH \
    HOME=/tmp

# g++: torch.compile (inductor) builds the int8 kernels of a served model at load time. git: lineage records the
# commit. make: the README's entry points.
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ git make \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/aimass
COPY pyproject.toml README.md ./
COPY aimass/ aimass/
COPY components/ components/
COPY pipelines/ pipelines/
COPY helm/ helm/
COPY scripts/ scripts/
COPY manifests/ manifests/
COPY data.dvc Makefile ./

RUN python -m venv "$VIRTUAL_ENV" \
 && pip install --upgrade pip \
 && pip install --extra-index-url "$TORCH_INDEX_URL" -e . \
 && python scripts/install_k8s_tools.py \
 && python -c "import aimass.cli, torch; print('torch', torch.__version__)"

# An unprivileged user with a fixed numeric id, as the chart's securityContext (runAsUser 10001) expects; it owns
# nothing in the image, so a compromised process cannot change the code it runs.
RUN groupadd --system --gid 10001 aimass \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --shell /usr/sbin/nologin aimass
USER 10001:10001

ENTRYPOINT ["aimass"]
CMD ["--help"]
