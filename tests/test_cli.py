"""The ``botmain`` command against the session's real Ray head (token auth on) and its
embedded PostgreSQL: up, status, ingest as a Ray job, and refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from cluster import runtime
from cluster.config import BotmainConfig

from tests.conftest import SAMPLE

BOTMAIN = str(Path(sys.executable).parent / "botmain")


def botmain(config_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("BOTMAIN_PG_DSN", "RAY_AUTH_MODE", "RAY_ADDRESS")}
    env["BOTMAIN_CONFIG_DIR"] = str(config_dir)
    return subprocess.run([BOTMAIN, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_help_lists_the_commands():
    result = subprocess.run([BOTMAIN, "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for command in ("up", "down", "status", "ingest"):
        assert f"  {command} " in result.stdout


def test_a_bad_config_stops_the_cli_with_the_file_and_key(tmp_path: Path):
    from tests.conftest import write_config_dir

    directory = write_config_dir(tmp_path / "configs", serve={"port": "eighty"})
    result = botmain(directory, "status")
    assert result.returncode != 0
    assert "serve.yaml: port: expected a valid integer" in result.stderr


def test_dashboard_and_job_api_refuse_requests_without_the_token(ray_head: BotmainConfig):
    url = runtime.endpoints(ray_head.cluster).dashboard_url
    for path in ("/api/version", "/api/jobs/"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url + path, timeout=5)
        assert refused.value.code == 401
    request = urllib.request.Request(url + "/api/version", headers={"Authorization": f"Bearer {runtime.auth_token()}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert json.loads(response.read())["ray_version"] == "2.60.0"


def test_up_is_idempotent_and_status_reports_ray_store_and_lake(ray_head: BotmainConfig, session_config_dir: Path):
    up = botmain(session_config_dir, "up")
    assert up.returncode == 0, up.stderr
    assert runtime.endpoints(ray_head.cluster).dashboard_url in up.stdout
    assert "[embedded" in up.stdout

    status = botmain(session_config_dir, "status", "--json")
    assert status.returncode == 0, status.stderr
    st = json.loads(status.stdout)
    assert st["ray_running"] and st["nodes"] == 1 and st["cpus"] == 2
    assert st["store_reachable"] and st["store_kind"] == "embedded"
    assert st["migrations_applied"] and not st["migrations_pending"]
    assert set(st["table_rows"]) >= {"bars", "funding_rates", "quotes", "book_snapshots"}


def _modes(paths) -> dict[Path, int]:
    return {p: p.stat().st_mode & 0o7777 for p in paths if not p.is_symlink()}


@pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as another user only when we are root")
def test_up_changes_no_mode_outside_var_and_never_prints_the_password(ray_head: BotmainConfig, session_config_dir: Path, tmp_path: Path):
    """``botmain up`` with a fresh embedded store in a project directory others may pass
    (0711) but not list: the modes of the data directory's parents and of the bundled
    server binaries are the same afterwards (an earlier Botmain opened them all up), and
    the output shows the DSN masked."""
    from cluster.store.embedded import BUNDLED_INSTALL, EmbeddedPostgres, scratch_directory
    from tests.conftest import free_port

    project = scratch_directory("botmain-up-")
    var = project / "var"
    directory = tmp_path / "configs"
    shutil.copytree(session_config_dir, directory)
    store = yaml.safe_load((directory / "store.yaml").read_text())
    store["postgres"]["embedded"].update(data_dir=str(var / "pg"), password_file=str(var / "pg.password"), port=free_port())
    (directory / "store.yaml").write_text(yaml.safe_dump(store))
    watched = [*var.parents, *BUNDLED_INSTALL.parents, *BUNDLED_INSTALL.rglob("*")]
    before = _modes(watched)
    server = EmbeddedPostgres(var / "pg", port=store["postgres"]["embedded"]["port"])
    try:
        up = botmain(directory, "up")
        assert up.returncode == 0, up.stderr
        assert _modes(watched) == before
        password = (var / "pg.password").read_text().strip()
        assert f"postgres:***@127.0.0.1:{server.port}" in up.stdout
        assert password not in up.stdout + up.stderr
        status = botmain(directory, "status", "--json")
        assert json.loads(status.stdout)["store_reachable"] and password not in status.stdout + status.stderr
    finally:
        server.destroy()
        shutil.rmtree(project, ignore_errors=True)


def test_ingest_runs_as_a_ray_job_through_the_authenticated_job_api(ray_head: BotmainConfig, session_config_dir: Path):
    botmain(session_config_dir, "up")
    result = botmain(session_config_dir, "ingest", "--submit", str(SAMPLE / "drift"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "submitted Ray job ingest-" in result.stdout
    assert "SUCCEEDED" in result.stdout
    assert "2 file(s) ingested, 0 refused" in result.stdout  # the job's own report, streamed back
    for ray_info in ("INFO job_manager.py", "Running entrypoint for job", "INFO sdk.py", "WebSocket closed"):
        assert ray_info not in result.stdout + result.stderr  # Ray's INFO lines do not interleave with ours

    st = json.loads(botmain(session_config_dir, "status", "--json").stdout)
    assert st["table_rows"]["funding_rates"] >= 7_080 + 8_467
    assert st["lake_rows"] >= 7_080 + 8_467


def test_ingest_of_an_unparseable_file_fails_and_names_it(session_config_dir: Path, tmp_path: Path):
    bad = tmp_path / "binance" / "futures" / "SOL_USDT_USDT-1m-futures.feather"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not arrow at all")
    result = botmain(session_config_dir, "ingest", str(bad))
    assert result.returncode == 1
    assert "REFUSED" in result.stdout and "not a readable Feather/Arrow file" in result.stdout
