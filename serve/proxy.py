"""Ray Serve's HTTP proxy (uvicorn, one per node), as far as the venue selector depends on it:
the options it starts with (host, port, TLS from ``serve.yaml``), and the environment it
must run in.

TLS. Ray 2.60's ``HTTPOptions`` has ``ssl_certfile`` / ``ssl_keyfile`` and hands them to
uvicorn, so the proxy itself can answer HTTPS. Not used: ``ssl_keyfile_password`` (Serve
keeps its HTTP options in the controller's state in the GCS, so a password there would be a
secret in the GCS), and ``ssl_ca_certs`` (client certificates). The options are fixed
while Serve runs: ``serve.start`` only warns when they differ and keeps the old ones, so
``running_differs`` lets ``botmain serve`` say so instead.

Client addresses. uvicorn rewrites the request's client address from ``X-Forwarded-For``
when the peer is in ``FORWARDED_ALLOW_IPS`` (127.0.0.1 and ::1 when unset); Serve 2.60
offers no option for it. ``botmain up`` starts Ray's processes with it empty (trust no
one: cluster.runtime.PROXY_ENVIRONMENT), and a replica refuses to start in a Ray whose
processes were started without it (``check_environment``), since its rate limit would then
key on addresses a client chose.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from cluster.config import BotmainConfig
from cluster.runtime import PROXY_ENVIRONMENT


class ProxyConfigError(RuntimeError):
    """Serve's proxy cannot serve the venue selector as configured."""


def check_environment(environ: dict[str, str] | None = None) -> None:
    """Refuse to run where Serve's proxy would believe ``X-Forwarded-For`` from anyone: this
    process is a Ray worker started like the proxy, so it sees the proxy's environment."""
    env = os.environ if environ is None else environ
    for name, value in PROXY_ENVIRONMENT.items():
        if env.get(name) != value:
            raise ProxyConfigError(
                f"Ray was started without {name}={value!r}: Serve's HTTP proxy would then take the client's address from "
                f"X-Forwarded-For sent from this host (uvicorn's default), and the rate limit could be dodged. Start Ray with "
                f"`botmain up` (which sets it), or set {name}={value!r} in the environment of `ray start`; trusted proxies "
                "go in serve.yaml's trusted_proxies"
            )


def tls_files(config: BotmainConfig) -> tuple[Path, Path] | None:
    """The certificate and key files, checked to exist here (each proxy's node needs them too)."""
    tls = config.serve.tls
    if tls is None:
        return None
    cert, key = config.path(tls.cert_file), config.path(tls.key_file)
    for what, path in (("cert_file", cert), ("key_file", key)):
        if not path.is_file():
            raise ProxyConfigError(f"serve.yaml: tls.{what}: {path} is not a file")
    return cert, key


def http_options(config: BotmainConfig) -> dict:
    """``serve.start(http_options=...)`` for ``serve.yaml`` (the TLS files None without TLS,
    so that ``running_differs`` sees a running HTTPS proxy differ from a plain one)."""
    cfg = config.serve
    files = tls_files(config)
    return {"host": cfg.host, "port": cfg.port,
            "ssl_certfile": str(files[0]) if files else None, "ssl_keyfile": str(files[1]) if files else None}


def running_differs(running, wanted: dict) -> list[str]:
    """The fields of ``wanted`` in which the running proxies' ``HTTPOptions`` differ."""
    return [name for name, value in wanted.items() if getattr(running, name, None) != value]


def client_context(config: BotmainConfig) -> ssl.SSLContext | None:
    """For this machine's own HTTPS requests to the service (``botmain serve`` / ``decide``):
    the system's trust store plus the configured certificate itself, accepted as a trust
    anchor, so that a self-signed certificate verifies too. None without TLS."""
    files = tls_files(config)
    if files is None:
        return None
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=str(files[0]))
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context
