"""The venue selector's Serve application under load, beside a no-op Serve deployment of the
same shape measured in the same run on the same machine.

* reference: a FastAPI ingress deployment whose ``POST /v1/decide`` parses the JSON body and
  returns a small JSON object; same replica settings (one replica, ``num_cpus=0``, the same
  ``max_ongoing_requests``), behind the same Serve HTTP proxy;
* ours: ``POST /v1/decide`` with a bearer token, through the shared per-IP rate limiter
  (its limit raised in this script's configuration, the check still made on every request),
  ``@serve.batch`` and an xgboost model of the shape ``botmain train-selector`` trains (300
  trees of depth 6, fitted to tests/selector_fixtures.py's synthetic costs) loaded from the
  registry in an embedded PostgreSQL. Each request carries its market state (the
  MDS is not running here), rotating over 64 different payloads.

Concurrent clients (aiohttp, HTTP/1.1 keep-alive, one connection per client) on
127.0.0.1, at 16 and 64 clients, ``MEASURE_S`` each after ``WARMUP_S``; the two deployments
alternate in ``ROUNDS`` short slices so that neither gets a quieter machine (this machine's
throughput drifts by a fifth from one 8-second stretch to the next). Beside the rates, the
server's CPU per request: the Serve proxy's and the deployment's own processes (replica, and
for ours the rate limiter), read from the OS over each slice, a figure the drift moves less. Then, for ours only: decisions/s through a
``DeploymentHandle`` from a driver in the cluster (the execution server's path: no HTTP, no
token, no rate limit), and through ``POST /v1/decide/batch`` with 100 decisions per request.

Targets: ours >= 0.9x the no-op's requests/s and p99 <= 1.25x the no-op's p99 at the same
concurrency. Ray runs locally with 2 CPUs (the machine's). The last line is one JSON object
with every figure printed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
import shutil
import socket
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import ray  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from ray import serve  # noqa: E402

from actors import names  # noqa: E402
from cluster.config import load_config  # noqa: E402
from cluster.config.models import ServeConfig  # noqa: E402
from cluster.runtime import PROXY_ENVIRONMENT  # noqa: E402
from cluster.store.embedded import EmbeddedPostgres, scratch_directory  # noqa: E402
from cluster.store.migrations import migrate  # noqa: E402
from jobs.train_selector.walk_forward import TrainSettings  # noqa: E402
from serve.app import APP_NAME, build_app  # noqa: E402
from serve.rate_limit import stop_limiter  # noqa: E402
from tests.selector_fixtures import decide_payload, register_model, train_model  # noqa: E402

CONCURRENCY = (16, 64)
WARMUP_S = 2.0
MEASURE_S = 16.0  # per deployment and concurrency, in ROUNDS alternating slices
ROUNDS = 8
HANDLE_S = 6.0
BATCH_SIZE = 100
TARGET_THROUGHPUT_RATIO = 0.9
TARGET_P99_RATIO = 1.25
NOOP_APP = "noop-reference"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


noop_api = FastAPI()


@serve.deployment(name="NoopReference", ray_actor_options={"num_cpus": 0})
@serve.ingress(noop_api)
class NoopReference:
    """The reference: the same ingress shape, no work."""

    @noop_api.post("/v1/decide")
    async def decide(self, body: dict) -> dict:
        return {"ok": True, "fields": len(body)}


async def load(url: str, bodies: list[bytes], headers: dict[str, str], clients: int, seconds: float,
               warmup_s: float = WARMUP_S) -> dict:
    """``clients`` concurrent clients, each sending its next request when the last is answered:
    the answered requests' latencies (s), the measured time and the failures. aiohttp, not
    httpx: at 64 connections httpx spent as much CPU per request as Serve's proxy, on a
    machine whose 2 cores the server needs."""
    latencies: list[float] = []
    failures = 0
    headers = {**headers, "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=clients, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def worker(w: int, until: float, record: bool) -> None:
            nonlocal failures
            i = w
            while time.perf_counter() < until:
                t = time.perf_counter()
                async with session.post(url, data=bodies[i % len(bodies)], headers=headers) as r:
                    await r.read()
                    ok = r.status == 200
                if not ok:
                    failures += 1
                elif record:
                    latencies.append(time.perf_counter() - t)
                i += clients

        if warmup_s:
            await asyncio.gather(*(worker(w, time.perf_counter() + warmup_s, False) for w in range(clients)))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w, t0 + seconds, True) for w in range(clients)))
        elapsed = time.perf_counter() - t0
    return {"latencies": latencies, "elapsed": elapsed, "failures": failures}


def summary(runs: list[dict]) -> dict:
    lat = np.concatenate([np.asarray(r["latencies"]) for r in runs]) * 1e3
    elapsed = sum(r["elapsed"] for r in runs)
    out = {"requests_per_s": len(lat) / elapsed, "p50_ms": float(np.percentile(lat, 50)),
           "p99_ms": float(np.percentile(lat, 99)), "requests": int(len(lat)), "failures": sum(r["failures"] for r in runs)}
    if all("server_cpu_s" in r for r in runs):
        out["server_cpu_ms_per_request"] = sum(r["server_cpu_s"] for r in runs) / len(lat) * 1e3
    return out


SERVER_PROCESSES = {  # process titles Ray gives the actors: the proxy, then each deployment's own
    "proxy": ("ray::ProxyActor",),
    "decide": (f"ray::ServeReplica:{APP_NAME}:", "ray::RateLimiter"),
    "noop": (f"ray::ServeReplica:{NOOP_APP}:",),
}


def server_processes(deployment: str) -> list[psutil.Process]:
    """The proxy's and ``deployment``'s processes on this machine, by their Ray process titles."""
    prefixes = SERVER_PROCESSES["proxy"] + SERVER_PROCESSES[deployment]
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        title = (proc.info["cmdline"] or [""])[0]
        if title.startswith(prefixes):
            found.append(proc)
    return found


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def measured_slice(name: str, url: str, bodies: list[bytes], headers: dict[str, str], clients: int, seconds: float) -> dict:
    procs = server_processes(name)
    before = cpu_seconds(procs)
    result = asyncio.run(load(url, bodies, headers, clients, seconds, 0.0))
    result["server_cpu_s"] = cpu_seconds(procs) - before
    return result


def compare(targets: dict[str, tuple[str, dict[str, str]]], bodies: list[bytes], clients: int) -> dict[str, dict]:
    """The deployments in alternating rounds (order flipped each round), so that a busier
    moment of the machine falls on both alike; each gets ``MEASURE_S`` in total."""
    for url, headers in targets.values():
        asyncio.run(load(url, bodies, headers, clients, 0.0, WARMUP_S))
    runs: dict[str, list[dict]] = {name: [] for name in targets}
    names_ = list(targets)
    for r in range(ROUNDS):
        for name in (names_ if r % 2 == 0 else names_[::-1]):
            url, headers = targets[name]
            runs[name].append(measured_slice(name, url, bodies, headers, clients, MEASURE_S / ROUNDS))
    return {name: summary(r) for name, r in runs.items()}


def handle_path(bodies: list[dict], in_flight: int, seconds: float) -> dict:
    """Decisions/s through the application's ``DeploymentHandle`` from this driver."""
    handle = serve.get_app_handle(APP_NAME)

    async def run() -> dict:
        latencies: list[float] = []

        async def worker(w: int, until: float) -> None:
            i = w
            while time.perf_counter() < until:
                t = time.perf_counter()
                answer = await handle.decide.remote(bodies[i % len(bodies)])
                assert answer["decided_by"] == "model"
                latencies.append(time.perf_counter() - t)
                i += in_flight

        await asyncio.gather(*(worker(w, time.perf_counter() + 1.0) for w in range(in_flight)))
        latencies.clear()
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w, t0 + seconds) for w in range(in_flight)))
        elapsed = time.perf_counter() - t0
        lat = np.asarray(latencies) * 1e3
        return {"decisions_per_s": len(lat) / elapsed, "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}

    return asyncio.run(run())


def main() -> None:
    base = scratch_directory("botmain-bench-serve-")
    pg = EmbeddedPostgres(base / "pg", port=free_port(), database="bench", settings={"fsync": "off"})
    dsn = pg.start()
    try:
        run(dsn)
    finally:
        pg.destroy()
        shutil.rmtree(base, ignore_errors=True)


def run(dsn: str) -> None:
    config = load_config(ROOT / "configs")
    shipped_limit = config.serve.rate_limit
    # the limit is a setting: raised here so that the load is measured, checked on every request
    serve_cfg = ServeConfig.model_validate({**config.serve.model_dump(), "rate_limit": {"requests_per_s": 1e6, "burst": 1_000_000}})
    config = dataclasses.replace(config, serve=serve_cfg)
    raw = train_model(config, seed=7, trees=TrainSettings.n_estimators, max_depth=TrainSettings.max_depth)

    async def prepare() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn)
            await register_model(conn, "bench-v1", raw, activate=True)
        finally:
            await conn.close()

    asyncio.run(prepare())
    client_secret = secrets.token_urlsafe(24)
    # the replicas read their secrets and the registry's DSN from the environment of Ray's
    # processes, which this driver starts: so they go in this process's environment first,
    # with what `botmain up` adds (Serve's proxy believing no X-Forwarded-For)
    os.environ.update({"BOTMAIN_JWT_SECRET": secrets.token_urlsafe(48), "BOTMAIN_API_CLIENTS": f"bench:{client_secret}",
                       "BOTMAIN_PG_DSN": dsn, **PROXY_ENVIRONMENT})

    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace=names.NAMESPACE, log_to_driver=False,
             logging_level="ERROR")
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    selector_app = build_app(config)
    noop_app = NoopReference.options(max_ongoing_requests=max(100, 2 * config.serve.batch.max_batch_size)).bind()
    serve.run_many([serve.RunTarget(selector_app, name=APP_NAME, route_prefix="/"),
                    serve.RunTarget(noop_app, name=NOOP_APP, route_prefix="/noop")])
    url = f"http://127.0.0.1:{port}"
    token = httpx.post(f"{url}/v1/token", data={"grant_type": "client_credentials", "client_id": "bench",
                                                "client_secret": client_secret}).json()["access_token"]
    payloads = [decide_payload(config, "SOL-PERP" if i % 2 else "BTC-PERP", "buy" if i % 3 else "sell", 1 + i % 7, seed=i)
                for i in range(64)]
    bodies = [json.dumps(p).encode() for p in payloads]
    check = httpx.post(f"{url}/v1/decide", content=bodies[0], headers={"Authorization": f"Bearer {token}",
                                                                        "Content-Type": "application/json"}).json()
    assert check["decided_by"] == "model" and check["model_version"] == "bench-v1", check
    predictor = httpx.get(f"{url}/v1/healthz").json()["predictor"]

    figures: dict = {"cpus": 2, "measure_s": MEASURE_S, "replicas": config.serve.replicas, "predictor": predictor,
                     "model_trees": TrainSettings.n_estimators, "model_max_depth": TrainSettings.max_depth,
                     "max_batch_size": config.serve.batch.max_batch_size, "batch_wait_timeout_s": config.serve.batch.wait_timeout_s}
    rows = []
    try:
        for clients in CONCURRENCY:
            measured = compare({"noop": (f"{url}/noop/v1/decide", {}),
                                "decide": (f"{url}/v1/decide", {"Authorization": f"Bearer {token}"})}, bodies, clients)
            ref, ours = measured["noop"], measured["decide"]
            throughput_ratio = ours["requests_per_s"] / ref["requests_per_s"]
            p99_ratio = ours["p99_ms"] / ref["p99_ms"]
            for who, m in (("noop", ref), ("decide", ours)):
                for key, value in m.items():
                    figures[f"{who}_c{clients}_{key}"] = value
            figures[f"c{clients}_throughput_ratio"] = throughput_ratio
            figures[f"c{clients}_p99_ratio"] = p99_ratio
            figures[f"c{clients}_server_cpu_ratio"] = ours["server_cpu_ms_per_request"] / ref["server_cpu_ms_per_request"]
            figures[f"c{clients}_meets_targets"] = throughput_ratio >= TARGET_THROUGHPUT_RATIO and p99_ratio <= TARGET_P99_RATIO
            rows.append((f"no-op Serve deployment, {clients} clients", ref))
            rows.append((f"POST /v1/decide, {clients} clients", ours))

        handle = handle_path(payloads, 64, HANDLE_S)
        figures.update({f"handle_{k}": v for k, v in handle.items()})
        batch_body = [json.dumps({"requests": [payloads[(j + i) % 64] for i in range(BATCH_SIZE)]}).encode() for j in range(8)]
        batch = summary([asyncio.run(load(f"{url}/v1/decide/batch", batch_body, {"Authorization": f"Bearer {token}"}, 4, HANDLE_S, 1.0))])
        figures.update({"batch_size": BATCH_SIZE, "batch_requests_per_s": batch["requests_per_s"],
                        "batch_decisions_per_s": batch["requests_per_s"] * BATCH_SIZE,
                        "batch_p50_ms": batch["p50_ms"], "batch_p99_ms": batch["p99_ms"], "batch_failures": batch["failures"]})
    finally:
        serve.shutdown()
        stop_limiter(APP_NAME)
        ray.shutdown()

    width = 44
    print(f"\nvenue selector on Ray Serve, 2 CPUs, {MEASURE_S:.0f} s per row in {ROUNDS} alternating slices, clients on 127.0.0.1 "
          f"(shipped limit {shipped_limit.requests_per_s:g}/s per IP raised to 1e6/s for the load)")
    print(f"model: {TrainSettings.n_estimators} trees of depth {TrainSettings.max_depth}, predicting through the {predictor}; "
          f"@serve.batch up to {config.serve.batch.max_batch_size}, wait {config.serve.batch.wait_timeout_s * 1e3:g} ms")
    print(f"{'measurement':<{width}}  {'requests/s':>10}  {'p50 ms':>8}  {'p99 ms':>8}  {'server CPU ms/req':>17}  failures")
    for name, m in rows:
        print(f"{name:<{width}}  {m['requests_per_s']:>10,.0f}  {m['p50_ms']:>8.1f}  {m['p99_ms']:>8.1f}  "
              f"{m['server_cpu_ms_per_request']:>17.2f}  {m['failures']}")
    print()
    for clients in CONCURRENCY:
        verdict = "meets" if figures[f"c{clients}_meets_targets"] else "MISSES"
        print(f"{clients} clients: ours / no-op throughput {figures[f'c{clients}_throughput_ratio']:.2f} "
              f"(target >= {TARGET_THROUGHPUT_RATIO}), p99 {figures[f'c{clients}_p99_ratio']:.2f}x "
              f"(target <= {TARGET_P99_RATIO}): {verdict} the targets; server CPU per request "
              f"{figures[f'c{clients}_server_cpu_ratio']:.2f}x the no-op's")
    print(f"{'handle (DeploymentHandle.decide, 64 in flight)':<{width}}  {figures['handle_decisions_per_s']:>10,.0f} decisions/s"
          f"  p50 {figures['handle_p50_ms']:.1f} ms  p99 {figures['handle_p99_ms']:.1f} ms")
    print(f"{f'POST /v1/decide/batch, {BATCH_SIZE} per request, 4 clients':<{width}}  {figures['batch_decisions_per_s']:>10,.0f} decisions/s"
          f"  ({figures['batch_requests_per_s']:.1f} requests/s, p50 {figures['batch_p50_ms']:.1f} ms, p99 {figures['batch_p99_ms']:.1f} ms)")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
