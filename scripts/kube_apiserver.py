"""A Kubernetes API server on loopback: etcd and kube-apiserver, for the tests and for trying the manifests and the
chart on a machine without a cluster.

    make k8s-apiserver                      # starts both, prints the KUBECONFIG to use, runs until Ctrl-C
    python scripts/kube_apiserver.py --work-dir /tmp/k8s

What runs: Debian's etcd (`apt-get install etcd-server`) on a free loopback port, and kube-apiserver with a CA and
serving certificate made here, a service-account key pair (so TokenRequest works: `kubectl create token`), an
admin token in group system:masters, `--authorization-mode=Node,RBAC` and the default admission plugins, PodSecurity
among them. It admits, validates and stores objects exactly as a cluster's control plane does. There is no kubelet,
scheduler or controller manager: Deployments are stored, pods never run, namespaces get no `default` service
account and deleted namespaces never finish terminating.

The API server binary: $AIMASS_KUBE_APISERVER (a kube-apiserver executable), else the xz-compressed build in
../shared/k8s/ beside the checkout (Kubernetes v1.36.2; its README says how it was built), decompressed into the
work folder and refused unless its sha256 is the one pinned below.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import hashlib
import ipaddress
import lzma
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
BINARY_VARIABLE = "AIMASS_KUBE_APISERVER"
SHARED_BUILD = REPO_ROOT.parent / "shared" / "k8s" / "kube-apiserver.xz"
# The decompressed v1.36.2 build in shared/k8s (its README gives the same digest).
PINNED_SHA256 = "a6797fe2af750fbf3e8331fa0953ab628f32acdacb9b86f8efd310fc6872c474"
ADMIN_USER = "aimass-admin"


class ControlPlaneUnavailable(RuntimeError):
    """etcd or kube-apiserver is not on this machine; the message says which and how to get it."""


@dataclass
class LocalApiServer:
    """A running API server: its URL, an admin kubeconfig, and kubectl against it."""

    url: str
    kubeconfig: Path
    ca_file: Path
    admin_token: str
    work_dir: Path
    kubectl_binary: str = "kubectl"
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def kubectl(self, *arguments: str, kubeconfig: Path | None = None, check: bool = True,
                stdin: str | None = None) -> subprocess.CompletedProcess:
        """kubectl with the admin's kubeconfig (or `kubeconfig`); `check` raises with kubectl's own words."""
        command = [self.kubectl_binary, "--kubeconfig", str(kubeconfig or self.kubeconfig), *arguments]
        finished = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120)
        if check and finished.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(arguments)} failed (exit {finished.returncode}): "
                               f"{finished.stderr.strip()}")
        return finished

    def kubeconfig_for(self, service_account: str, namespace: str) -> Path:
        """A kubeconfig acting as a service account, with a token from the TokenRequest API (as a pod would get)."""
        token = self.kubectl("create", "token", service_account, "-n", namespace, "--duration", "2h").stdout.strip()
        path = self.work_dir / f"kubeconfig-{namespace}-{service_account}"
        write_kubeconfig(path, self.url, self.ca_file, f"system:serviceaccount:{namespace}:{service_account}", token)
        return path

    def resident_memory_mib(self) -> dict[str, float]:
        """Resident memory of etcd and kube-apiserver now, from /proc."""
        return {name: _rss_kib(process.pid) / 1024 for name, process in self.processes.items()}


def locate_binaries(work_dir: Path) -> tuple[str, Path]:
    """(etcd, kube-apiserver) ready to run.

    Raises:
        ControlPlaneUnavailable: either is missing, or the shared build's sha256 is not the pinned one.
    """
    etcd = shutil.which("etcd")
    if etcd is None:
        raise ControlPlaneUnavailable("etcd is missing: `apt-get install -y etcd-server` (Debian's package; "
                                      "`make test` installs it)")
    configured = os.environ.get(BINARY_VARIABLE)
    if configured:
        if not os.access(configured, os.X_OK):
            raise ControlPlaneUnavailable(f"${BINARY_VARIABLE}={configured} is not an executable kube-apiserver")
        return etcd, Path(configured)
    if not SHARED_BUILD.is_file():
        raise ControlPlaneUnavailable(f"no kube-apiserver: set ${BINARY_VARIABLE} to one, or put the shared build at "
                                      f"{SHARED_BUILD}")
    binary = work_dir / "kube-apiserver"
    with lzma.open(SHARED_BUILD) as compressed, open(binary, "wb") as out:
        shutil.copyfileobj(compressed, out, length=1 << 20)
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()
    if digest != PINNED_SHA256:
        binary.unlink()
        raise ControlPlaneUnavailable(f"{SHARED_BUILD} decompresses to sha256 {digest}, not the pinned "
                                      f"{PINNED_SHA256}: refusing to run it")
    binary.chmod(0o755)
    return etcd, binary


def write_certificates(folder: Path) -> dict[str, Path]:
    """A CA, the API server's serving certificate for 127.0.0.1 signed by it, and a service-account key pair."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aimass-local-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    server_key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"),
             x509.DNSName("kubernetes.default.svc")]
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
              .issuer_name(ca_name).public_key(server_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName(names), critical=False)
              .sign(ca_key, hashes.SHA256()))
    account_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = serialization.Encoding.PEM
    files = {
        "ca": (ca.public_bytes(pem)),
        "server_cert": server.public_bytes(pem),
        "server_key": server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        "account_key": account_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()),
        "account_pub": account_key.public_key().public_bytes(pem,
                                                             serialization.PublicFormat.SubjectPublicKeyInfo),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = folder / f"{name}.pem"
        paths[name].write_bytes(data)
        paths[name].chmod(0o600)
    return paths


def write_kubeconfig(path: Path, url: str, ca_file: Path, user: str, token: str) -> Path:
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "aimass-local",
        "clusters": [{"name": "aimass-local", "cluster": {"server": url, "certificate-authority": str(ca_file)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "aimass-local", "context": {"cluster": "aimass-local", "user": user}}],
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@contextlib.contextmanager
def running_apiserver(work_dir: Path, kubectl_binary: str = "kubectl",
                      startup_timeout_seconds: float = 120) -> Iterator[LocalApiServer]:
    """etcd and kube-apiserver on free loopback ports until the block ends; both are stopped then, whatever happens.

    Raises:
        ControlPlaneUnavailable: a binary is missing.
        RuntimeError: either did not start (the end of its log is in the message).
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    etcd, apiserver = locate_binaries(work_dir)
    certificates = write_certificates(work_dir / "pki")
    admin_token = secrets.token_urlsafe(32)
    tokens = work_dir / "tokens.csv"
    tokens.write_text(f'{admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
    tokens.chmod(0o600)
    client_port, peer_port, api_port = _free_ports(3)
    server = LocalApiServer(f"https://127.0.0.1:{api_port}", work_dir / "kubeconfig", certificates["ca"],
                            admin_token, work_dir, kubectl_binary)
    write_kubeconfig(server.kubeconfig, server.url, certificates["ca"], ADMIN_USER, admin_token)
    with contextlib.ExitStack() as stack:
        stack.callback(_stop_all, server.processes)
        etcd_url = f"http://127.0.0.1:{client_port}"
        server.processes["etcd"] = _start(stack, work_dir / "etcd.log", [
            etcd, "--name", "aimass-local", "--data-dir", str(work_dir / "etcd"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"aimass-local=http://127.0.0.1:{peer_port}", "--log-level", "warn"])
        server.processes["kube-apiserver"] = _start(stack, work_dir / "kube-apiserver.log", [
            str(apiserver), f"--etcd-servers={etcd_url}", "--bind-address=127.0.0.1", f"--secure-port={api_port}",
            "--advertise-address=127.0.0.1", f"--cert-dir={work_dir / 'pki'}",
            f"--tls-cert-file={certificates['server_cert']}", f"--tls-private-key-file={certificates['server_key']}",
            f"--client-ca-file={certificates['ca']}", "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={certificates['account_pub']}",
            f"--service-account-signing-key-file={certificates['account_key']}",
            f"--token-auth-file={tokens}", "--authorization-mode=Node,RBAC",
            "--service-cluster-ip-range=10.0.0.0/24", "--endpoint-reconciler-type=none",
            # As clusters run it (kubeadm's default): privileged pods are for Pod Security to refuse, per namespace.
            "--allow-privileged=true"])
        _wait_until_ready(server, startup_timeout_seconds)
        yield server


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def _start(stack: contextlib.ExitStack, log_path: Path, command: list[str]) -> subprocess.Popen:
    log = stack.enter_context(open(log_path, "w"))
    # Its own process group: Ctrl-C in a terminal reaches this script, which then stops it in order.
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _wait_until_ready(server: LocalApiServer, timeout_seconds: float) -> None:
    context = ssl.create_default_context(cafile=str(server.ca_file))
    request = urllib.request.Request(f"{server.url}/readyz", headers={"Authorization": f"Bearer {server.admin_token}"})
    deadline = time.monotonic() + timeout_seconds
    while True:
        for name, process in server.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with status {process.returncode}: "
                                   f"{(server.work_dir / f'{name}.log').read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(request, context=context, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"kube-apiserver was not ready within {timeout_seconds:.0f} s: "
                               f"{(server.work_dir / 'kube-apiserver.log').read_text()[-3000:]}")
        time.sleep(0.25)


def _stop_all(processes: dict[str, subprocess.Popen]) -> None:
    """The API server first, then etcd: nothing is left running."""
    for name in ("kube-apiserver", "etcd"):
        process = processes.get(name)
        if process is None or process.poll() is not None:
            continue
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=None, help="certificates, etcd's data, logs (default: a "
                                                                     "temporary folder, removed at the end)")
    parser.add_argument("--kubectl", default=shutil.which("kubectl") or str(REPO_ROOT / ".venv" / "bin" / "kubectl"))
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        work_dir = args.work_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="aimass-k8s-")))
        started = time.monotonic()
        try:
            server = stack.enter_context(running_apiserver(work_dir.resolve(), args.kubectl))
        except ControlPlaneUnavailable as error:
            print(f"kube_apiserver: {error}", file=sys.stderr)
            return 1
        memory = ", ".join(f"{name} {mib:.0f} MiB" for name, mib in server.resident_memory_mib().items())
        print(f"API server ready at {server.url} in {time.monotonic() - started:.1f} s ({memory} resident; no "
              "kubelet: objects are admitted and stored, pods never run)")
        print(f"  export KUBECONFIG={server.kubeconfig}")
        print("  kubectl apply --server-side -k manifests/")
        print("Ctrl-C stops etcd and the API server.", flush=True)
        stopped = []
        signal.signal(signal.SIGTERM, lambda *_: stopped.append(True))
        try:
            while not stopped:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
