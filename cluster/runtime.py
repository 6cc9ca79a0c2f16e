"""Start, join, stop and inspect the Ray cluster, with token authentication on.

Ray 2.60 protects the dashboard, the job API and the GCS with a shared token when
``RAY_AUTH_MODE=token``. We keep it on: ``botmain up`` creates the token if there is none
(``~/.ray/auth_token``, or ``RAY_AUTH_TOKEN_PATH`` / ``RAY_AUTH_TOKEN``), and every Ray
process and client we start runs with ``RAY_AUTH_MODE=token``. Nodes that join need the
same token file.

Ray's processes are started with this virtualenv's ``bin`` first on ``PATH``, so that a
job's ``python`` entrypoint runs with Botmain's dependencies, and with
``FORWARDED_ALLOW_IPS=""`` (``PROXY_ENVIRONMENT``): Ray Serve's HTTP proxy is uvicorn, which
otherwise believes ``X-Forwarded-For`` from 127.0.0.1 and rewrites the client address from
it, so that a client on this host could pose as any address. With it empty the proxy
believes no one, and the venue selector decides itself which proxies to believe
(``serve.trusted_proxies``, serve/client_address.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cluster.config.models import ClusterConfig

AUTH_MODE_VAR = "RAY_AUTH_MODE"
# uvicorn (Serve's proxy) reads it when it is not told whom to trust: empty trusts nobody
PROXY_ENVIRONMENT = {"FORWARDED_ALLOW_IPS": ""}


class RayRuntimeError(RuntimeError):
    pass


def token_path() -> Path:
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token")).expanduser()


def enable_token_auth(create: bool = True) -> None:
    """Turn token auth on for this process and its children; create the token if asked."""
    os.environ[AUTH_MODE_VAR] = "token"
    if os.environ.get("RAY_AUTH_TOKEN") or token_path().exists() or not create:
        return
    from ray._private.authentication.authentication_token_generator import generate_new_authentication_token

    path = token_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(generate_new_authentication_token())


def auth_token() -> str:
    token = os.environ.get("RAY_AUTH_TOKEN")
    if token:
        return token.strip()
    path = token_path()
    if not path.exists():
        raise RayRuntimeError(f"no Ray auth token at {path}: run `botmain up` (or copy the head's token there)")
    return path.read_text().strip()


def ray_process_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **(extra or {}), **PROXY_ENVIRONMENT}
    env[AUTH_MODE_VAR] = "token"
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = venv_bin + os.pathsep + env.get("PATH", "")
    return env


def _ray(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    ray_bin = Path(sys.executable).parent / "ray"
    return subprocess.run([str(ray_bin), *args], env=ray_process_env(env), capture_output=True, text=True)


@dataclass(frozen=True)
class ClusterEndpoints:
    gcs_address: str
    dashboard_url: str


def endpoints(config: ClusterConfig) -> ClusterEndpoints:
    if config.address:
        host = config.address.rsplit(":", 1)[0]
        return ClusterEndpoints(config.address, f"http://{host}:{config.head.dashboard_port}")
    head = config.head
    dash_host = "127.0.0.1" if head.dashboard_host in ("0.0.0.0", "") else head.dashboard_host
    gcs_host = head.node_ip_address or "127.0.0.1"  # the GCS listens on every interface
    return ClusterEndpoints(f"{gcs_host}:{head.port}", f"http://{dash_host}:{head.dashboard_port}")


def start_head(config: ClusterConfig, env: dict[str, str] | None = None) -> ClusterEndpoints:
    """Start a local head node (GCS, raylet, dashboard, job API) unless one answers already.

    ``env`` adds variables to the environment of Ray's processes (and so of jobs)."""
    enable_token_auth()
    ends = endpoints(config)
    if dashboard_alive(ends.dashboard_url):
        return ends
    head = config.head
    args = [
        "start",
        "--head",
        f"--port={head.port}",
        "--include-dashboard=true",
        f"--dashboard-host={head.dashboard_host}",
        f"--dashboard-port={head.dashboard_port}",
        f"--dashboard-agent-listen-port={head.dashboard_agent_port}",
        "--disable-usage-stats",
    ]
    if head.node_ip_address is not None:
        args.append(f"--node-ip-address={head.node_ip_address}")
    if head.num_cpus is not None:
        args.append(f"--num-cpus={head.num_cpus}")
    if head.object_store_memory_mb is not None:
        args.append(f"--object-store-memory={head.object_store_memory_mb * 1024 * 1024}")
    if head.temp_dir is not None:
        args.append(f"--temp-dir={head.temp_dir}")
    args.append(f"--ray-client-server-port={head.client_server_port}")
    result = _ray(*args, env=env)
    if result.returncode != 0:
        raise RayRuntimeError(f"`ray start --head` failed:\n{_tail(result)}")
    return ends


def join(address: str, node_ip_address: str | None = None) -> None:
    """Start a worker node on this machine that joins the head at ``address``."""
    enable_token_auth(create=False)
    auth_token()  # fail early, with a useful message, if the token was not copied here
    args = ["start", f"--address={address}", "--disable-usage-stats"]
    if node_ip_address:
        args.append(f"--node-ip-address={node_ip_address}")
    result = _ray(*args)
    if result.returncode != 0:
        raise RayRuntimeError(f"`ray start --address={address}` failed:\n{_tail(result)}")


def stop() -> None:
    """Stop every Ray process on this machine."""
    result = _ray("stop", "--force")
    if result.returncode != 0:
        raise RayRuntimeError(f"`ray stop` failed:\n{_tail(result)}")


def stop_head(config: ClusterConfig) -> None:
    """Stop only the head started with ``config`` (its own ``temp_dir`` and ports), leaving
    any other Ray cluster on this machine alone; the test suite uses this."""
    import psutil

    if config.head.temp_dir is None:
        raise RayRuntimeError("stop_head needs head.temp_dir to tell its processes from others'")
    marks = (config.head.temp_dir, f":{config.head.port} ", f"--port={config.head.client_server_port} ")
    me = psutil.Process()
    spared = {me.pid, *(p.pid for p in me.parents())}
    roots = []
    for proc in psutil.process_iter(["cmdline"]):
        if proc.pid in spared:
            continue
        cmdline = " ".join(proc.info["cmdline"] or []) + " "
        if any(mark in cmdline for mark in marks):
            roots.append(proc)
    victims = {p.pid: p for root in roots for p in [root, *_descendants(root)] if p.pid not in spared}
    for proc in victims.values():
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(victims.values()), timeout=10)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass


def _descendants(proc) -> list:
    import psutil

    try:
        return proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def dashboard_get(dashboard_url: str, path: str, timeout: float = 5.0) -> dict:
    request = urllib.request.Request(
        dashboard_url.rstrip("/") + path, headers={"Authorization": f"Bearer {auth_token()}"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def dashboard_alive(dashboard_url: str) -> bool:
    try:
        dashboard_get(dashboard_url, "/api/version", timeout=2.0)
        return True
    except (urllib.error.URLError, OSError, RayRuntimeError, ValueError):
        return False


def nodes(dashboard_url: str) -> list[dict]:
    """Alive and dead nodes as the dashboard's state API reports them."""
    body = dashboard_get(dashboard_url, "/api/v0/nodes")
    return body["data"]["result"]["result"]


def _tail(result: subprocess.CompletedProcess, lines: int = 20) -> str:
    text = (result.stderr or "") + (result.stdout or "")
    return "\n".join(text.strip().splitlines()[-lines:])
