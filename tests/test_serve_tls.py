"""HTTPS at Serve's own proxy: ``serve.yaml``'s ``tls`` names a certificate and its key, and
``botmain serve`` starts Serve's proxies with them (Ray 2.60's ``HTTPOptions.ssl_certfile`` /
``ssl_keyfile``, handed to uvicorn). The certificate is self-signed, made here with the
``cryptography`` package (in the locked stack already: ccxt requires it), for 127.0.0.1.

Serve's HTTP options are fixed while Serve runs, so this module has the session cluster's
Serve to itself: it starts it through the CLI and shuts it down at the end."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

import httpx
import pytest
import yaml

from cluster.config import BotmainConfig
from tests.conftest import free_port, write_config_dir


def _self_signed(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "botmain test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                    x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "serve.crt", directory / "serve.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return cert_path, key_path


def _config_dir(target: Path, ray_head: BotmainConfig, serve: dict) -> Path:
    """A configuration like the session's (its store and Ray head) with ``serve`` merged in."""
    directory = write_config_dir(target, serve=serve)
    session_dir = ray_head.root / "configs"
    for name in ("store", "cluster"):
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(yaml.safe_load((session_dir / f"{name}.yaml").read_text())))
    return directory


@pytest.fixture(scope="module")
def https(ray_head: BotmainConfig, serve_secret_files: dict[str, str], tmp_path_factory) -> dict:
    """The venue selector deployed by ``botmain serve`` with TLS on a free port."""
    from click.testing import CliRunner

    from cli.selector import serve_command

    base = tmp_path_factory.mktemp("tls")
    (base / "secrets").mkdir(mode=0o700)
    cert, key = _self_signed(base / "secrets")
    port = free_port()
    directory = _config_dir(base / "configs", ray_head, {"port": port, "tls": {"cert_file": str(cert), "key_file": str(key)}})
    env = {"BOTMAIN_CONFIG_DIR": str(directory), "BOTMAIN_PG_DSN": "", **serve_secret_files}
    result = CliRunner().invoke(serve_command, [], env=env)
    assert result.exit_code == 0, result.output
    yield {"port": port, "cert": cert, "env": env, "output": result.output, "base": base}
    result = CliRunner().invoke(serve_command, ["--stop"], env=env)
    import ray
    from ray import serve

    serve.shutdown()  # in case --stop left it (another application): the next module's Serve starts afresh
    ray.shutdown()
    assert result.exit_code == 0, result.output


def test_the_health_check_answers_over_https_with_the_configured_certificate(https: dict):
    port = https["port"]
    assert f"url        https://127.0.0.1:{port}/v1/decide" in https["output"]
    trust = ssl.create_default_context(cafile=str(https["cert"]))
    r = httpx.get(f"https://127.0.0.1:{port}/v1/healthz", verify=trust)
    assert r.status_code == 200 and r.json()["status"] == "ok"
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"https://127.0.0.1:{port}/v1/healthz")  # the system's trust store does not know it
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/v1/healthz")  # no plain HTTP on the TLS port


def test_serve_says_so_when_the_running_proxies_have_other_http_options(https: dict, ray_head: BotmainConfig):
    """Serve keeps a running proxy's options and only logs a warning; botmain serve refuses."""
    from click.testing import CliRunner

    from cli.selector import serve_command

    directory = _config_dir(https["base"] / "plain-configs", ray_head, {"port": https["port"]})
    result = CliRunner().invoke(serve_command, [], env={**https["env"], "BOTMAIN_CONFIG_DIR": str(directory)})
    assert result.exit_code == 1, result.output
    assert "Serve already runs on this cluster with other HTTP options" in result.output and "ssl_certfile" in result.output


def test_a_pem_block_in_serve_yaml_is_refused(tmp_path: Path):
    from cluster.config import ConfigError, load_config

    directory = write_config_dir(tmp_path / "configs", serve={"tls": {"cert_file": "var/serve.crt",
                                                                      "key_file": "-----BEGIN PRIVATE KEY-----\nMIG..."}})
    with pytest.raises(ConfigError, match=r"serve.yaml: tls.key_file: expected the path of a PEM file, not the PEM text"):
        load_config(directory)
    directory = write_config_dir(tmp_path / "other", serve={"trusted_proxies": ["10.0.0.0/8", "proxy.example"]})
    with pytest.raises(ConfigError, match=r"trusted_proxies\[1\]: 'proxy.example' is not an IP address or network"):
        load_config(directory)
