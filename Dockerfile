# The aimass project image: the base image of every pipeline component and the model server's image.
#
#   make image                                   # CPU torch, tagged with aimass.config.PROJECT_IMAGE
#   make image TORCH_VARIANT=cu130               # CUDA 13.0 torch (same tag; also runs the CPU stages)
#   make image BASE_IMAGE=aimass-base:bookworm   # on a Debian base built locally (make base-image), no registry
#
# scripts/build-image.sh drives Docker or podman and mounts pip's CA bundle and wheel folder into the build where the
# host's pip needs them; they are never copied into a layer. The project is installed as the README installs it (an
# editable install of this tree into a virtual environment), so the chart (helm/aimass-serving) and the compiled
# pipelines travel with the code. No secrets are baked in: credentials reach containers from Kubernetes Secrets at
# run time. No HEALTHCHECK: Kubernetes probes /v2/health/{live,ready} instead.
ARG BASE_IMAGE=python:3.11.7-slim-bookworm

FROM ${BASE_IMAGE}

# cpu or a CUDA variant of the PyTorch wheel index (cu128, cu130): torch==2.14.1 and torchvision==0.29.1 themselves
# are pinned in pyproject.toml; the index supplies both in the same variant.
# Empty: torch comes from the package index or PIP_WHEELS (a folder holding the wheel).
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}
# Paths, inside the build, of a CA bundle pip must trust and a folder of wheels pip may take from (pip's `cert` and
# `find-links`); both are mounted read-only for the build only. Empty: pip's defaults.
ARG PIP_CERT_FILE=""
ARG PIP_WHEELS=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/aimass/.venv \
    PATH=/opt/aimass/.venv/bin:$PATH \
    HOME=/tmp

# g++ and Python's headers: torch.compile (inductor) builds the int8 kernels of a served model at load time, and
# they include Python.h (python:3.11-slim has the headers; Debian's python3 keeps them in libpython3.11-dev).
# Nothing else: the steps get the git commit as a parameter, and DVC reads git through its own libraries.
# apt-get clean: a debootstrap base, unlike python:3.11-slim, keeps every downloaded package.
RUN headers=$(python -c "import sysconfig; print(sysconfig.get_paths()['include'])") \
 && apt-get update \
 && apt-get install -y --no-install-recommends g++ $([ -f "$headers/Python.h" ] || echo libpython3.11-dev) \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /usr/share/doc /usr/share/man

WORKDIR /opt/aimass

# The dependencies get a layer of their own, before any source: changing the code rebuilds only the small layers
# below. What the layer leaves out, about 900 MB in all (docs/PERFORMANCE.md has the sizes):
# - bytecode for modules nothing imports: pip installs with --no-compile, then precompile_imports.py imports what
#   the steps import and Python writes just that bytecode (without it each step's imports take twice as long);
# - the test suites of the scientific packages, and torch's C++ test programs (torch_shm_manager stays: DataLoader
#   workers share memory through it);
# - the symbol table of torch's two big libraries, 115 MB (strip --strip-unneeded keeps what the dynamic linker
#   uses). Not the other packages' libraries: auditwheel-patched ones (numpy.libs, scipy.libs) break when stripped.
COPY pyproject.toml scripts/precompile_imports.py ./
RUN if [ -n "$PIP_CERT_FILE" ]; then export PIP_CERT="$PIP_CERT_FILE"; fi \
 && if [ -n "$PIP_WHEELS" ]; then export PIP_FIND_LINKS="$PIP_WHEELS"; fi \
 && if [ -n "$TORCH_INDEX_URL" ]; then export PIP_EXTRA_INDEX_URL="$TORCH_INDEX_URL"; fi \
 && python -m venv "$VIRTUAL_ENV" \
 && pip install --quiet --no-compile --upgrade pip==26.3 setuptools==84.2.1 \
 && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
    > /tmp/requirements.txt \
 && pip install --quiet --no-compile -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt \
 && site=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") \
 && for package in pandas numpy scipy sklearn matplotlib sympy networkx; do \
      find "$site/$package" -depth -type d -name tests -exec rm -rf {} +; done \
 && rm -rf "$site/torch/test" \
 && find "$site/torch/bin" -mindepth 1 ! -name torch_shm_manager -exec rm -rf {} + \
 && strip --strip-unneeded "$site"/torch/lib/libtorch_cpu.so "$site"/torch/lib/libtorch_python.so \
 && PYTHONDONTWRITEBYTECODE= python precompile_imports.py \
 && rm precompile_imports.py

# Only helm: the deploy step drives Helm; nothing in the image calls kubectl.
COPY scripts/install_k8s_tools.py scripts/
RUN if [ -n "$PIP_CERT_FILE" ]; then export PIP_CERT="$PIP_CERT_FILE"; fi \
 && python scripts/install_k8s_tools.py --only helm

COPY README.md data.dvc Makefile ./
COPY aimass/ aimass/
COPY components/ components/
COPY pipelines/ pipelines/
COPY helm/ helm/
COPY scripts/ scripts/
COPY manifests/ manifests/

RUN pip install --quiet --no-compile --no-deps --no-build-isolation -e . \
 && PYTHONDONTWRITEBYTECODE= python scripts/precompile_imports.py --project \
 && python -c "import aimass.cli, torch; print('torch', torch.__version__)"

# An unprivileged user with a fixed numeric id, as the chart's securityContext (runAsUser 10001) expects; it owns
# nothing in the image, so a compromised process cannot change the code it runs.
RUN groupadd --system --gid 10001 aimass \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --shell /usr/sbin/nologin aimass
USER 10001:10001

ENTRYPOINT ["aimass"]
CMD ["--help"]
