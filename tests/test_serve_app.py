"""The venue selector's Serve application on the session's real Ray cluster, over real HTTP
on 127.0.0.1, with its model registry in the session's real PostgreSQL.

Three applications run side by side: ``venue-selector`` (one replica, rate limit raised so
that the tests can send many requests), ``venue-selector-limited`` (two replicas, the
shipped 5 requests/s per client IP) and ``venue-selector-proxied`` (one replica, the shipped
limit, 127.0.0.1 a trusted proxy) for the rate-limit tests. Their replicas read the secrets
from the environment the session's Ray was started with (files named by BOTMAIN_*_FILE,
tests/conftest.py), as a user's do."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import itertools
import json
import os
import select
import socket
import time
import urllib.request
from pathlib import Path

import httpx
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.config import BotmainConfig
from cluster.config.models import ServeConfig
from serve.credentials import key_id
from serve.selector.features import FEATURES
from tests.conftest import SERVE_CLIENTS, SERVE_JWT_SECRET, _create_database, free_port
from tests.selector_fixtures import decide_payload, register_model, train_model

SECRET = SERVE_JWT_SECRET
CLIENTS = {client_id: secret for client_id, (secret, _) in SERVE_CLIENTS.items()}  # desk: decide, ops: decide+admin
APP, LIMITED, PROXIED = "venue-selector", "venue-selector-limited", "venue-selector-proxied"
SHARED = "venue-selector-shared"
SHARED_REFILL_PER_S = 0.02  # one token per 50 s: a burst's count cannot depend on how fast the host sends it
_db = itertools.count()


def with_serve(config: BotmainConfig, **settings_) -> BotmainConfig:
    merged = config.serve.model_dump()
    for key, value in settings_.items():
        merged[key] = {**merged[key], **value} if isinstance(value, dict) else value
    return dataclasses.replace(config, serve=ServeConfig.model_validate(merged))


def with_database(config: BotmainConfig, database: str) -> BotmainConfig:
    """``config`` with the embedded store's database changed: the replicas resolve their DSN
    from the configuration and their environment, as in production, and find this one."""
    postgres = config.store.postgres
    embedded = postgres.embedded.model_copy(update={"database": database})
    store = config.store.model_copy(update={"postgres": postgres.model_copy(update={"embedded": embedded})})
    return dataclasses.replace(config, store=store)


@pytest.fixture(scope="module")
def registry_dsn(pg_server) -> str:
    return asyncio.run(_create_database(pg_server, f"serve_{os.getpid()}_{next(_db)}", migrated=True))


@pytest.fixture(scope="module")
def served_config(ray_head: BotmainConfig, registry_dsn: str) -> BotmainConfig:
    """The session configuration with the store's database this module's registry."""
    return with_database(ray_head, registry_dsn.rsplit("/", 1)[1])


def _db_call(dsn: str, fn):
    import asyncpg

    async def go():
        conn = await asyncpg.connect(dsn)
        try:
            return await fn(conn)
        finally:
            await conn.close()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def serve_port(ray_head: BotmainConfig):
    import ray
    from ray import serve

    from actors import names
    from cluster import runtime
    from serve.rate_limit import stop_limiter

    ray.init(address=runtime.endpoints(ray_head.cluster).gcs_address, namespace=names.NAMESPACE, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield port
    serve.shutdown()
    for app in (APP, LIMITED, PROXIED, SHARED):
        stop_limiter(app)
    ray.shutdown()


@pytest.fixture(scope="module")
def urls(serve_port: int, served_config: BotmainConfig, serve_secret_files: dict[str, str]) -> dict[str, str]:
    """The three applications, deployed together (their replicas start in parallel):

    * ``venue-selector``: one replica, the rate limit raised far above what the tests send;
    * ``venue-selector-limited`` under ``/limited``: two replicas and the shipped limit
      (5 requests/s, burst 5, per client IP), no trusted proxy;
    * ``venue-selector-proxied`` under ``/proxied``: one replica, 127.0.0.1 (this test, then)
      a trusted proxy, and the shipped burst of 5 refilled at 1 request/s: slow enough that
      the test's steps do not race the refill, and too slow for the limiter to lease tokens
      to its single replica, which would make a burst's count depend on arrival order;
    * ``venue-selector-shared`` under ``/shared``: two replicas, the shipped burst of 5 refilled
      at one token per 50 s, so that what a burst is admitted tells one shared limit from one
      per replica however slowly this host sends it."""
    from ray import serve

    from serve.app import build_app

    assert served_config.serve.rate_limit.requests_per_s == 5 and served_config.serve.rate_limit.burst == 5
    assert served_config.serve.trusted_proxies == []
    fast = with_serve(served_config, auth_reload_s=0.3)  # key rotations picked up quickly
    main = with_serve(fast, rate_limit={"requests_per_s": 100_000, "burst": 100_000}, model_poll_s=0.3)
    limited = with_serve(fast, replicas=2)
    proxied = with_serve(fast, trusted_proxies=["127.0.0.1"], rate_limit={"requests_per_s": 1})
    shared = with_serve(fast, replicas=2, rate_limit={"requests_per_s": SHARED_REFILL_PER_S})
    environ = serve_secret_files  # what build_app checks up front: the same files the replicas read
    serve.run_many([
        serve.RunTarget(build_app(main, app_name=APP, environ=environ), name=APP, route_prefix="/"),
        serve.RunTarget(build_app(limited, app_name=LIMITED, environ=environ), name=LIMITED, route_prefix="/limited"),
        serve.RunTarget(build_app(proxied, app_name=PROXIED, environ=environ), name=PROXIED, route_prefix="/proxied"),
        serve.RunTarget(build_app(shared, app_name=SHARED, environ=environ), name=SHARED, route_prefix="/shared"),
    ])
    base = f"http://127.0.0.1:{serve_port}"
    return {APP: base, LIMITED: f"{base}/limited", PROXIED: f"{base}/proxied", SHARED: f"{base}/shared"}


@pytest.fixture(scope="module")
def base_url(urls: dict[str, str]) -> str:
    return urls[APP]


@pytest.fixture(scope="module")
def limited_url(urls: dict[str, str]) -> str:
    return urls[LIMITED]


@pytest.fixture(scope="module")
def proxied_url(urls: dict[str, str]) -> str:
    return urls[PROXIED]


@pytest.fixture(scope="module")
def shared_url(urls: dict[str, str]) -> str:
    return urls[SHARED]


def _token_for(base_url: str, client_id: str, **form) -> str:
    r = httpx.post(f"{base_url}/v1/token", data={"grant_type": "client_credentials", "client_id": client_id,
                                                 "client_secret": CLIENTS[client_id], **form})
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


@pytest.fixture(scope="module")
def token(base_url: str) -> str:
    """The ``desk`` client's: scope ``decide``."""
    return _token_for(base_url, "desk")


@pytest.fixture(scope="module")
def admin_token(base_url: str) -> str:
    """The ``ops`` client's: scopes ``decide admin``."""
    return _token_for(base_url, "ops")


@pytest.fixture(scope="module")
def client(base_url: str, token: str):
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def admin(base_url: str, admin_token: str):
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=30) as c:
        yield c


def _claims(**override) -> dict:
    now = int(time.time())
    claims = {"iss": "botmain", "aud": "botmain-api", "sub": "desk", "iat": now, "exp": now + 600, "jti": "abc",
              "scope": "decide"}
    claims.update(override)
    return claims


def _sign(claims: dict, key: str = SECRET, algorithm: str = "HS256", kid: str | None = "derived") -> str:
    """A token as the service would sign it with ``key`` (its ``kid`` derived from the key)."""
    headers = {} if kid is None else {"kid": key_id(key) if kid == "derived" else kid}
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# --- the token buckets (the limiter actor's logic) ----------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_admits_its_burst_then_one_request_per_refill():
    from serve.rate_limit import TokenBuckets

    clock = Clock()
    buckets = TokenBuckets(5, 5, replicas=2, clock=clock)
    answers = buckets.admit(["1.2.3.4"] * 6 + ["5.6.7.8"])
    assert [wait for wait, _ in answers[:5]] == [0.0] * 5
    assert answers[5][0] == pytest.approx(0.2) and answers[6] == (0.0, 0)  # another client has its own bucket
    assert all(lease == 0 for _, lease in answers)  # a small bucket is never leased from: exact across replicas
    clock.now += 0.1
    assert buckets.admit(["1.2.3.4"])[0][0] == pytest.approx(0.1)
    clock.now += 0.1
    assert buckets.admit(["1.2.3.4", "1.2.3.4"]) == [(0.0, 0), (pytest.approx(0.2), 0)]
    clock.now += 10
    assert [w for w, _ in buckets.admit(["1.2.3.4"] * 6)] == [0.0] * 5 + [pytest.approx(0.2)]  # capped at the burst


def test_leases_come_out_of_the_shared_bucket_and_can_be_given_back():
    from serve.rate_limit import LEASE_S, TokenBuckets

    clock = Clock()
    buckets = TokenBuckets(1000, 1000, replicas=2, clock=clock)
    (wait, lease), = buckets.admit(["ip"])
    assert wait == 0.0 and lease == min(999 // 8, int(1000 * LEASE_S))
    # whatever is leased and admitted, the bucket never hands out more than it holds
    admitted = 1 + lease
    while True:
        (wait, lease), = buckets.admit(["ip"])
        if wait > 0:
            break
        admitted += 1 + lease
    assert admitted == 1000
    buckets.admit([], returned={"ip": 100})
    answers = buckets.admit(["ip"] * 101)
    assert sum(1 + lease for wait, lease in answers if wait == 0.0) == 100 and answers[-1][0] > 0


class _FakeMethod:
    """``actor.method.remote(...)`` -> an awaitable, as Ray's, calling ``fn`` (which may raise)."""

    def __init__(self, fn) -> None:
        self.fn = fn

    def remote(self, *args):
        async def call():
            return self.fn(*args)

        return asyncio.ensure_future(call())


class _FakeLimiter:
    """The limiter actor's interface over real ``TokenBuckets``; ``down`` makes every call fail
    as Ray's do while the actor restarts, ``restart()`` brings it back as Ray would: a new
    epoch, full buckets and its constructor's settings."""

    def __init__(self, clock, rate: float, burst: int, replicas: int) -> None:
        from serve.rate_limit import TokenBuckets

        self.clock, self.created_with, self.down, self.epoch = clock, (rate, burst, replicas), False, "epoch-1"
        self.buckets = TokenBuckets(rate, burst, replicas, clock=clock)
        self.configured: list[tuple] = []
        self.admit = _FakeMethod(self._admit)
        self.settings = _FakeMethod(self._settings)
        self.configure = _FakeMethod(self._configure)

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("the actor is restarting")

    def _admit(self, keys, returned=None):
        self._check()
        return self.epoch, self.buckets.admit(keys, returned)

    def _settings(self):
        self._check()
        b = self.buckets
        return {"requests_per_s": b.rate, "burst": b.burst, "replicas": b.replicas, "epoch": self.epoch}

    def _configure(self, *settings):
        self._check()
        self.configured.append(settings)
        self.buckets.configure(*settings)
        return self._settings()

    def restart(self, rate: float, burst: int, replicas: int) -> None:
        from serve.rate_limit import TokenBuckets

        self.down, self.epoch = False, "epoch-2"
        self.buckets = TokenBuckets(rate, burst, replicas, clock=self.clock)


def test_a_replica_limits_on_its_own_share_while_the_limiter_is_away():
    from serve.rate_limit import PROBE_INTERVAL_S, Admission

    async def run() -> None:
        clock = Clock()
        limiter = _FakeLimiter(clock, 5, 5, 2)
        admission = Admission(limiter, 5, 5, 2, epoch="epoch-1", clock=clock)
        assert await admission.check("ip") == 0.0 and admission.state == "shared"
        limiter.down = True
        # the failing call is answered locally, with this replica's share: burst 5 // 2, at 5 / 2 per second
        waits = [await admission.check("ip") for _ in range(3)]
        assert waits[:2] == [0.0, 0.0] and waits[2] == pytest.approx(1 / 2.5)
        assert admission.state.startswith("local: the shared limiter is unreachable (ConnectionError)")
        clock.now += 0.41  # one token of the share back
        assert await admission.check("ip") == 0.0 and await admission.check("ip") > 0
        # back with its constructor's settings (an older deployment's, say): reconfigured, then shared again
        limiter.restart(1, 1, 1)
        await asyncio.sleep(3 * PROBE_INTERVAL_S)
        assert admission.state == "shared" and limiter.configured == [(5, 5, 2)]
        assert [await admission.check("other") for _ in range(6)][4:] == [0.0, pytest.approx(0.2)]  # the shared bucket

    asyncio.run(run())


# --- secrets -------------------------------------------------------------------------------


def test_the_app_refuses_to_start_without_its_signing_key(served_config: BotmainConfig):
    from serve.app import build_app
    from serve.credentials import AuthConfigError

    clients = "desk:desk-secret-1"
    with pytest.raises(AuthConfigError, match="BOTMAIN_JWT_SECRET is not set"):
        build_app(served_config, environ={"BOTMAIN_API_CLIENTS": clients})
    with pytest.raises(AuthConfigError, match="BOTMAIN_JWT_SECRET is too short for HS256"):
        build_app(served_config, environ={"BOTMAIN_JWT_SECRET": "short", "BOTMAIN_API_CLIENTS": clients})
    with pytest.raises(AuthConfigError, match="BOTMAIN_JWT_SECRET is too short for HS256: key 2 needs") as err:
        build_app(served_config, environ={"BOTMAIN_JWT_SECRET": f"{SECRET},sh0rt", "BOTMAIN_API_CLIENTS": clients})
    assert "sh0rt" not in str(err.value)
    with pytest.raises(AuthConfigError, match="BOTMAIN_API_CLIENTS: entry 2 is not client_id:client_secret") as err:
        build_app(served_config, environ={"BOTMAIN_JWT_SECRET": SECRET, "BOTMAIN_API_CLIENTS": "a:s3cret,nosecret"})
    assert "s3cret" not in str(err.value)
    with pytest.raises(AuthConfigError, match="BOTMAIN_JWT_SECRET_FILE points to"):
        build_app(served_config, environ={"BOTMAIN_JWT_SECRET_FILE": "/nonexistent/key", "BOTMAIN_API_CLIENTS": clients})


def test_api_clients_keep_their_old_form_and_may_name_scopes():
    from serve.credentials import AuthConfigError, parse_clients

    clients = parse_clients("desk:s3cret, ops:pa:ss:decide+admin ,bot:t0ken:admin, old:with=and+signs")
    assert {cid: (c.secret.get_secret_value(), sorted(c.scopes)) for cid, c in clients.items()} == {
        "desk": ("s3cret", ["decide"]),  # no scopes written: decide, as before scopes existed
        "ops": ("pa:ss", ["admin", "decide"]),  # a ':' in the secret, so its scopes follow
        "bot": ("t0ken", ["admin"]),
        "old": ("with=and+signs", ["decide"]),
    }
    for text in ("ops:pa:ss", "ops:s3cret:decide+root", "ops:s3cret:", "ops::admin"):
        with pytest.raises(AuthConfigError, match="entry 1: the part after its last ':' is not a list of scopes") as err:
            parse_clients(text)
        assert "pa:ss" not in str(err.value) and "s3cret" not in str(err.value) and "root" not in str(err.value)


# --- tokens --------------------------------------------------------------------------------


def test_a_client_gets_a_short_lived_token_by_form_fields_or_http_basic(base_url: str):
    by_form = httpx.post(f"{base_url}/v1/token", data={"grant_type": "client_credentials", "client_id": "desk",
                                                       "client_secret": CLIENTS["desk"]})
    # RFC 6749 2.3.1: id and secret are form-encoded before Basic (the ops secret has ':' and '=')
    basic = base64.b64encode(b"ops:" + httpx.QueryParams({"s": CLIENTS["ops"]}).get("s").encode()).decode()
    by_basic = httpx.post(f"{base_url}/v1/token", data={"grant_type": "client_credentials"},
                          headers={"Authorization": f"Basic {basic}"})
    for response, client_id, scope in ((by_form, "desk", "decide"), (by_basic, "ops", "admin decide")):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["token_type"] == "Bearer" and body["expires_in"] == 900 and body["scope"] == scope
        assert response.headers["cache-control"] == "no-store"
        header = jwt.get_unverified_header(body["access_token"])
        assert header["alg"] == "HS256" and header["kid"] == key_id(SECRET)
        claims = jwt.decode(body["access_token"], SECRET, algorithms=["HS256"], audience="botmain-api", issuer="botmain")
        assert claims["sub"] == client_id and claims["exp"] - claims["iat"] == 900 and claims["jti"] and claims["scope"] == scope
    assert httpx.get(f"{base_url}/v1/models", headers={"Authorization": f"Bearer {by_basic.json()['access_token']}"}).status_code == 200


def test_a_client_may_ask_for_fewer_scopes_but_not_for_more(base_url: str):
    narrowed = httpx.post(f"{base_url}/v1/token", data={"grant_type": "client_credentials", "client_id": "ops",
                                                        "client_secret": CLIENTS["ops"], "scope": "decide"})
    assert narrowed.status_code == 200 and narrowed.json()["scope"] == "decide"
    for client_id, scope in (("desk", "admin"), ("desk", "decide admin"), ("ops", "root")):
        r = httpx.post(f"{base_url}/v1/token", data={"grant_type": "client_credentials", "client_id": client_id,
                                                     "client_secret": CLIENTS[client_id], "scope": scope})
        assert r.status_code == 400 and r.json()["error"] == "invalid_scope", (client_id, scope, r.text)
        assert "access_token" not in r.json()


@pytest.mark.parametrize(
    "data, headers, status, error",
    [
        ({"grant_type": "client_credentials", "client_id": "desk", "client_secret": "wrong"}, {}, 401, "invalid_client"),
        ({"grant_type": "client_credentials", "client_id": "mallory", "client_secret": "desk-secret-1"}, {}, 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, {"Authorization": "Basic " + base64.b64encode(b"desk:nope").decode()}, 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, {}, 401, "invalid_client"),
        ({"grant_type": "password", "client_id": "desk", "client_secret": "desk-secret-1"}, {}, 400, "unsupported_grant_type"),
        ({"client_id": "desk", "client_secret": "desk-secret-1"}, {}, 400, "invalid_request"),
    ],
    ids=["wrong-secret", "unknown-client", "wrong-basic", "no-credentials", "bad-grant-type", "no-grant-type"],
)
def test_token_requests_are_refused_with_rfc6749_errors(base_url: str, data, headers, status, error):
    r = httpx.post(f"{base_url}/v1/token", data=data, headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["error"] == error and r.json()["error_description"]
    assert "access_token" not in r.json()
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Basic")


def test_a_token_request_must_be_form_encoded(base_url: str):
    r = httpx.post(f"{base_url}/v1/token", json={"grant_type": "client_credentials", "client_id": "desk",
                                                 "client_secret": CLIENTS["desk"]})
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"


# --- bearer tokens -------------------------------------------------------------------------


def _bad_tokens(good: str) -> dict[str, str]:
    header, payload, signature = good.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    other_key = "another-key-of-the-same-length-" + "x" * 33
    return {
        "expired": _sign(_claims(iat=int(time.time()) - 1000, exp=int(time.time()) - 40)),  # past the 30 s leeway
        "tampered": ".".join([header, _b64({**claims, "sub": "ops"}), signature]),
        "wrong-key": _sign(_claims(), other_key, kid=key_id(SECRET)),  # claims to be our key, is not
        "unknown-kid": _sign(_claims(), other_key),
        "no-kid": _sign(_claims(), kid=None),
        "hs512": _sign(_claims(), algorithm="HS512"),
        "alg-none": ".".join([_b64({"alg": "none", "typ": "JWT", "kid": key_id(SECRET)}), _b64(_claims()), ""]),
        "wrong-audience": _sign(_claims(aud="someone-else")),
        "no-jti": _sign({k: v for k, v in _claims().items() if k != "jti"}),
        "no-scope": _sign({k: v for k, v in _claims().items() if k != "scope"}),
        "garbage": "not-a-jwt",
    }


def test_missing_expired_tampered_and_wrong_algorithm_tokens_get_401(base_url: str, token: str, ray_head: BotmainConfig):
    payload = decide_payload(ray_head)
    for name, bad in _bad_tokens(token).items():
        for method, path, body in (("GET", "/v1/models", None), ("POST", "/v1/decide", payload)):
            r = httpx.request(method, f"{base_url}{path}", json=body, headers={"Authorization": f"Bearer {bad}"})
            assert r.status_code == 401, (name, path, r.text)
            assert r.headers["www-authenticate"].startswith("Bearer") and 'error="invalid_token"' in r.headers["www-authenticate"], name
            assert r.json()["error"] == "invalid_token", name
    for headers in ({}, {"Authorization": f"Basic {token}"}, {"Authorization": "Bearer"}):
        r = httpx.post(f"{base_url}/v1/decide", json=payload, headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer"), (headers, r.text)
    r = httpx.post(f"{base_url}/v1/models/v1/activate")
    assert r.status_code == 401 and r.headers["www-authenticate"] == 'Bearer realm="botmain"'
    # the health check is open, and a good token passes
    assert httpx.get(f"{base_url}/v1/healthz").status_code == 200
    assert httpx.post(f"{base_url}/v1/decide", json=payload, headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_the_leeway_absorbs_clock_skew_between_nodes(base_url: str):
    """A token from a node whose clock runs 10 s ahead passes (``jwt.leeway_s``, 30 s by
    default), one from a minute ahead does not; expiry gets the same leeway."""
    now = int(time.time())
    cases = {
        "issued 10 s ahead": (_claims(iat=now + 10, exp=now + 910), 200),
        "issued 60 s ahead": (_claims(iat=now + 60, exp=now + 960), 401),
        "expired 10 s ago": (_claims(iat=now - 910, exp=now - 10), 200),
        "expired 60 s ago": (_claims(iat=now - 960, exp=now - 60), 401),
    }
    for name, (claims, status) in cases.items():
        r = httpx.get(f"{base_url}/v1/models", headers={"Authorization": f"Bearer {_sign(claims)}"})
        assert r.status_code == status, (name, r.text)
    r = httpx.get(f"{base_url}/v1/models", headers={"Authorization": f"Bearer {_sign(cases['issued 60 s ahead'][0])}"})
    assert "not valid yet" in r.json()["error_description"]


# --- scopes --------------------------------------------------------------------------------


def test_activating_a_model_needs_the_admin_scope(base_url: str, token: str, admin_token: str):
    r = httpx.post(f"{base_url}/v1/models/v0/activate", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 403, r.text
    assert r.json()["error"] == "insufficient_scope" and r.json()["scope"] == "admin"
    assert "needs the 'admin' scope; this token has: decide" in r.json()["error_description"]
    assert r.headers["www-authenticate"] == 'Bearer realm="botmain", error="insufficient_scope", scope="admin"'
    # the admin client gets through to the route (v0 is not registered)
    r = httpx.post(f"{base_url}/v1/models/v0/activate", headers={"Authorization": f"Bearer {admin_token}"})
    assert r.status_code == 404, r.text
    # a token without the decide scope cannot decide, however it was obtained
    admin_only = _sign(_claims(sub="ops", scope="admin"))
    r = httpx.get(f"{base_url}/v1/models", headers={"Authorization": f"Bearer {admin_only}"})
    assert r.status_code == 403 and r.json()["scope"] == "decide"


def test_every_protected_route_names_its_scope(base_url: str):
    """A new route is admin-only until it is listed in serve.scopes (closed by default); this
    keeps the list and the API in step."""
    from serve.auth import OPEN_PATHS
    from serve.scopes import ROUTES

    schema = httpx.get(f"{base_url}/openapi.json").json()
    routes = set()
    for path, operations in schema["paths"].items():
        if path in OPEN_PATHS:
            continue
        for method in operations:
            pattern = path.replace("{version}", "[^/]+")
            routes.add(f"{method.upper()} {pattern}")
    assert routes == set(ROUTES)


def test_the_openapi_docs_are_served(base_url: str):
    assert "swagger" in httpx.get(f"{base_url}/docs").text.lower()
    schema = httpx.get(f"{base_url}/openapi.json").json()
    assert {"/v1/token", "/v1/decide", "/v1/decide/batch", "/v1/models", "/v1/models/{version}/activate", "/v1/healthz"} <= set(schema["paths"])
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


# --- deciding ------------------------------------------------------------------------------


def test_without_a_model_the_rule_decides_and_says_so(client: httpx.Client, ray_head: BotmainConfig):
    assert client.get("/v1/healthz").json()["decided_by"] == "rule"
    r = client.post("/v1/decide", json=decide_payload(ray_head, "SOL-PERP", "sell", 25, horizon_h=8))
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["decided_by"] == "rule" and d["model_version"] is None and "no trained model" in d["note"]
    markets = {"drift:SOL-PERP", "binanceusdm:SOL-PERP", "hyperliquid:SOL-PERP", "jupiter:SOL-USDC", "raydium:SOL-USDC", "binance:SOL-USDT"}
    assert {a["market"] for a in d["alternatives"]} == markets == set(d["features"])
    costs = [a["cost_bps"] for a in d["alternatives"]]
    assert costs == sorted(costs)
    assert d["market"] in markets and d["kind"] in ("perp", "spot") and d["venue"] == d["market"].split(":")[0]
    assert d["expected_cost_bps"] == next(a["cost_bps"] for a in d["alternatives"] if a["market"] == d["market"])
    assert list(d["features"]["drift:SOL-PERP"]) == FEATURES
    assert (d["side"], d["size"], d["horizon_h"]) == ("sell", 25, 8)


@pytest.mark.parametrize(
    "change, loc",
    [
        ({"side": "hold"}, ["body", "side"]),
        ({"size": -1}, ["body", "size"]),
        ({"size": "ten"}, ["body", "size"]),
        ({"horizon_h": 0}, ["body", "horizon_h"]),
        ({"bogus": 1}, ["body", "bogus"]),
        ({"instrument": None}, ["body", "instrument"]),
        ({"instrument": "DOGE-PERP"}, ["body", "instrument"]),
        ({"venues": ["nowhere"]}, ["body", "venues"]),
        ({"features": {"drift:BTC-PERP": {"price": 60000}}}, ["body", "features"]),
        ({"features": {"drift:SOL-PERP": {"price": 0}}}, ["body", "features", "drift:SOL-PERP", "price"]),
        ({"features": {"drift:SOL-PERP": {"price": 150, "funding_bps_h": "high"}}}, ["body", "features", "drift:SOL-PERP", "funding_bps_h"]),
        ({"features": {"drift:SOL-PERP": {"price": float("inf")}}}, ["body", "features", "drift:SOL-PERP", "price"]),
        ({"features": {"drift:SOL-PERP": {"price": 150, "volume": float("nan")}}}, ["body", "features", "drift:SOL-PERP", "volume"]),
    ],
)
def test_bad_payloads_get_422_naming_the_field(client: httpx.Client, ray_head: BotmainConfig, change: dict, loc: list):
    payload = {**decide_payload(ray_head), **change}
    # allow_nan: the JSON Python writes for NaN/Infinity, which a sloppy client may send
    r = client.post("/v1/decide", content=json.dumps(payload, allow_nan=True), headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert [e["loc"] for e in r.json()["detail"]][0] == loc, r.json()


def test_malformed_bodies_get_422(client: httpx.Client, admin: httpx.Client):
    for content in (b"{not json", b"[]", b"", b'"SOL-PERP"', b"null"):
        r = client.post("/v1/decide", content=content, headers={"Content-Type": "application/json"})
        assert r.status_code == 422, (content, r.text)
    r = admin.post("/v1/models/bad version!/activate")
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "version"]


def test_a_batch_shares_one_request_and_names_the_refused_item(client: httpx.Client, ray_head: BotmainConfig):
    requests = [decide_payload(ray_head, "BTC-PERP" if i % 2 else "SOL-PERP", "buy" if i % 3 else "sell", 1 + i, seed=i) for i in range(100)]
    r = client.post("/v1/decide/batch", json={"requests": requests})
    assert r.status_code == 200, r.text
    decisions = r.json()["decisions"]
    assert len(decisions) == 100
    assert [d["instrument"] for d in decisions] == [q["instrument"] for q in requests]
    assert [d["size"] for d in decisions] == [q["size"] for q in requests]
    requests[7] = {**requests[7], "instrument": "DOGE-PERP"}
    r = client.post("/v1/decide/batch", json={"requests": requests})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "requests", 7, "instrument"]
    r = client.post("/v1/decide/batch", json={"requests": [requests[0]] * 1001})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "requests"]


# --- models --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(ray_head: BotmainConfig, registry_dsn: str) -> list[str]:
    """Two trained versions in the registry, neither active."""
    raws = {"v1": train_model(ray_head, seed=1), "v2": train_model(ray_head, seed=2)}

    async def put(conn):
        for version, raw in raws.items():
            await register_model(conn, version, raw)

    _db_call(registry_dsn, put)
    return list(raws)


def test_activate_switches_at_once_and_hot_reload_drops_no_request(client: httpx.Client, admin: httpx.Client, base_url: str,
                                                                     token: str, admin_token: str,
                                                                     ray_head: BotmainConfig, models: list[str]):
    listed = client.get("/v1/models").json()
    assert {m["version"] for m in listed["models"]} >= {"v1", "v2"} and listed["active"] is None
    assert admin.post("/v1/models/v0/activate").status_code == 404

    r = admin.post("/v1/models/v1/activate")
    assert r.status_code == 200, r.text
    assert r.json() == {"version": "v1", "previous": None}
    d = client.post("/v1/decide", json=decide_payload(ray_head)).json()
    assert (d["decided_by"], d["model_version"], d["note"]) == ("model", "v1", None)
    listed = client.get("/v1/models").json()
    assert listed["active"] == "v1" and listed["serving"] == "v1"

    async def load() -> tuple[list, float]:
        answers: list[tuple[float, int, str | None]] = []
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as c:
            async def worker(w: int) -> None:
                for i in range(25):
                    sent = time.perf_counter()
                    r = await c.post("/v1/decide", json=decide_payload(ray_head, seed=w * 100 + i))
                    answers.append((sent, r.status_code, r.json().get("model_version") if r.status_code == 200 else r.text))

            async def activate() -> float:
                await asyncio.sleep(0.3)
                r = await c.post("/v1/models/v2/activate", headers={"Authorization": f"Bearer {admin_token}"})
                assert r.status_code == 200, r.text
                return time.perf_counter()

            *_, activated = await asyncio.gather(*(worker(w) for w in range(8)), activate())
        return answers, activated

    answers, activated = asyncio.run(load())
    assert len(answers) == 200
    assert [a for a in answers if a[1] != 200] == []
    assert {a[2] for a in answers} <= {"v1", "v2"}
    assert {a[2] for a in answers if a[0] > activated} == {"v2"}  # sent after the switch
    assert sum(a[2] == "v1" for a in answers) > 0  # the switch happened under load
    assert {client.post("/v1/decide", json=decide_payload(ray_head, seed=i)).json()["model_version"] for i in range(20)} == {"v2"}


def test_every_replica_follows_the_registry(client: httpx.Client, ray_head: BotmainConfig, registry_dsn: str, models: list[str]):
    from serve import registry

    _db_call(registry_dsn, lambda conn: registry.activate(conn, "venue_selector", "v1"))  # as another replica would
    deadline = time.monotonic() + 10
    while client.get("/v1/healthz").json()["model_version"] != "v1" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.get("/v1/healthz").json()["model_version"] == "v1"
    assert client.post("/v1/decide", json=decide_payload(ray_head)).json()["model_version"] == "v1"


def test_the_execution_server_decides_through_a_handle(base_url: str, ray_head: BotmainConfig, models: list[str]):
    from ray import serve

    handle = serve.get_app_handle(APP)
    one = handle.decide.remote(decide_payload(ray_head, size=3)).result()
    assert one["size"] == 3 and one["decided_by"] == "model"
    many = handle.decide_many.remote([decide_payload(ray_head, seed=i) for i in range(10)]).result()
    assert len(many) == 10
    with pytest.raises(ValueError, match="instrument: unknown instrument 'DOGE-PERP'"):
        handle.decide.remote({**decide_payload(ray_head), "instrument": "DOGE-PERP"}).result()


def test_concurrent_requests_share_model_calls_and_get_the_answers_they_would_alone(
        client: httpx.Client, admin: httpx.Client, ray_head: BotmainConfig, models: list[str]):
    from ray import serve

    assert admin.post("/v1/models/v2/activate").status_code == 200
    payloads = [decide_payload(ray_head, "BTC-PERP" if i % 2 else "SOL-PERP", "buy" if i % 3 else "sell", 1 + i, seed=i)
                for i in range(64)]
    alone = [client.post("/v1/decide", json=p).json() for p in payloads[:8]]
    before = client.get("/v1/healthz").json()
    assert before["predictor"] == "compiled forest", before

    handle = serve.get_app_handle(APP)
    together = [r.result() for r in [handle.decide.remote(p) for p in payloads]]  # all in flight at once
    after = client.get("/v1/healthz").json()
    assert after["replica"] == before["replica"]  # the app has one replica
    assert after["batched_requests"] - before["batched_requests"] == 64
    assert after["batches"] - before["batches"] < 64 / 2, (before, after)  # shared: at least two per call on average
    for one, batched in zip(alone, together):
        assert batched == one


# --- fuzz ----------------------------------------------------------------------------------

_numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**30), 10**30), st.just("1"), st.none())
_markets = st.sampled_from(["drift:SOL-PERP", "jupiter:SOL-USDC", "binance:SOL-USDT", "drift:BTC-PERP", "x", ""])
_state = st.dictionaries(
    st.sampled_from(["price", "funding_bps_h", "funding_mean_24h_bps_h", "premium_bps", "volatility_bps",
                     "momentum_short_bps", "momentum_long_bps", "volume", "staleness_s", "other"]),
    _numbers, max_size=10,
)
_payload = st.fixed_dictionaries(
    {},
    optional={
        "instrument": st.one_of(st.sampled_from(["SOL-PERP", "BTC-PERP", "drift:SOL-PERP", "SOL", "SOL-USDC", "DOGE"]), st.text(max_size=80)),
        "side": st.one_of(st.sampled_from(["buy", "sell"]), st.text(max_size=5), st.integers()),
        "size": _numbers,
        "horizon_h": _numbers,
        "venues": st.one_of(st.none(), st.lists(st.sampled_from(["drift", "jupiter", "binance", "nowhere"]), max_size=4)),
        "features": st.one_of(st.dictionaries(_markets, _state, min_size=1, max_size=4), st.lists(st.integers(), max_size=2)),
        "extra": st.integers(),
    },
)


def test_fuzzed_decide_payloads_never_get_a_5xx(client: httpx.Client, ray_head: BotmainConfig):
    valid = decide_payload(ray_head)
    seen: dict[int, int] = {}

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(payload=_payload, base=st.booleans())
    def check(payload: dict, base: bool) -> None:
        body = {**valid, **payload} if base else payload
        # allow_nan: the JSON Python writes for NaN/Infinity, which a sloppy client may send
        r = client.post("/v1/decide", content=json.dumps(body, allow_nan=True), headers={"Content-Type": "application/json"})
        seen[r.status_code] = seen.get(r.status_code, 0) + 1
        assert r.status_code < 500, (body, r.text)
        assert r.status_code in (200, 422), (body, r.text)

    check()
    assert seen.get(200, 0) > 0 and seen.get(422, 0) > 0, seen


# --- market state from a lake whose venue stopped recording (issue 13, section 1) ----------

ENDED_APP = "venue-selector-ended"
ENDED_VENUES = {"binance:SOL-USDT", "binanceusdm:SOL-PERP"}


def test_a_venue_whose_recording_ended_is_left_out_and_named_never_a_500(
        serve_port: int, registry_dsn: str, serve_secret_files: dict[str, str], token: str, session_config_dir: Path,
        tmp_path_factory: pytest.TempPathFactory):
    """Its own application on a lake holding Drift's funding for the whole sample and Binance
    USD-M and spot (freqtrade files) only until 2025-10-07: the lake's newest hour is months
    past their end, and their last mark against today's index is out of bounds."""
    from ray import serve

    from serve.app import build_app
    from serve.rate_limit import stop_limiter
    from tests.selector_fixtures import ended_venue_config

    _, ended = ended_venue_config(session_config_dir, tmp_path_factory.mktemp("ended-serve"))
    config = with_serve(with_database(ended, registry_dsn.rsplit("/", 1)[1]), rate_limit={"requests_per_s": 100_000, "burst": 100_000})
    serve.run(build_app(config, app_name=ENDED_APP, environ=serve_secret_files), name=ENDED_APP, route_prefix="/ended")
    buy = {"instrument": "SOL-PERP", "side": "buy", "size": 10}
    only_ended = {**buy, "venues": ["binanceusdm", "binance"]}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{serve_port}/ended", headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            assert c.get("/v1/healthz").json()["status"] == "ok"
            r = c.post("/v1/decide", json=buy)
            assert r.status_code == 200, r.text
            d = r.json()
            assert {a["market"] for a in d["alternatives"]} == {"drift:SOL-PERP", "jupiter:SOL-USDC", "raydium:SOL-USDC"}
            excluded = {e["market"]: e for e in d["excluded"]}
            assert set(excluded) == ENDED_VENUES | {"hyperliquid:SOL-PERP"}
            assert excluded["binanceusdm:SOL-PERP"]["venue"] == "binanceusdm"
            assert "binanceusdm:SOL-PERP funding: no row since 2025-10-06 16:00 UTC" in excluded["binanceusdm:SOL-PERP"]["reason"]
            assert "no funding series recorded" in excluded["hyperliquid:SOL-PERP"]["reason"]

            r = c.post("/v1/decide", json=only_ended)  # nothing left to decide on: 409 naming each, not a 500
            assert r.status_code == 409, r.text
            detail = r.json()["detail"][0]
            assert detail["type"] == "no_candidate" and detail["loc"] == ["body", "venues"]
            assert {e["market"] for e in detail["excluded"]} == ENDED_VENUES and "no row since" in detail["msg"]
            r = c.post("/v1/decide/batch", json={"requests": [buy, only_ended]})
            assert r.status_code == 409 and r.json()["detail"][0]["loc"] == ["body", "requests", 1, "venues"], r.text

            health = c.get("/v1/healthz").json()
            assert health["status"] == "degraded", health
            assert health["decision_paths"]["http"]["answered"] == 1 and health["decision_paths"]["http"]["unavailable"] == 1
            assert health["decision_paths"]["batch"]["last_outcome"] == "unavailable"
            assert any("decide (http)" in p and "409" in p and "binanceusdm:SOL-PERP" in p for p in health["problems"])
            assert set(health["market_states"]["SOL"]["excluded"]) == ENDED_VENUES | {"hyperliquid:SOL-PERP"}

            assert c.post("/v1/decide", json=buy).status_code == 200  # the paths answer again: ok again
            assert c.post("/v1/decide/batch", json={"requests": [buy]}).status_code == 200
            health = c.get("/v1/healthz").json()
            assert (health["status"], health["problems"]) == ("ok", [])
            assert "409" in health["decision_paths"]["http"]["last_problem"]  # the last failure stays on record
    finally:
        serve.delete(ENDED_APP)
        stop_limiter(ENDED_APP)


# --- rate limit ----------------------------------------------------------------------------


async def _burst(url: str, token: str, n: int, path: str = "/v1/models") -> list[httpx.Response]:
    """``n`` requests at once, each on its own connection."""
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30,
                                 limits=httpx.Limits(max_connections=n)) as c:
        if path == "/v1/token":
            form = {"grant_type": "client_credentials", "client_id": "desk", "client_secret": CLIENTS["desk"]}
            return await asyncio.gather(*(c.post(f"{url}{path}", data=form, headers={"Authorization": ""}) for _ in range(n)))
        return await asyncio.gather(*(c.get(f"{url}{path}") for _ in range(n)))


def test_the_sixth_request_in_a_second_gets_429_and_the_next_window_admits_again(limited_url: str, token: str):
    time.sleep(1.1)  # a full bucket
    responses = asyncio.run(_burst(limited_url, token, 6))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 5 + [429], [r.text for r in responses]
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"] == "rate_limited" and "from 127.0.0.1" in refused.json()["error_description"]
    time.sleep(int(refused.headers["retry-after"]))
    assert httpx.get(f"{limited_url}/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    # the token endpoint is limited too; the health check is not
    time.sleep(1.1)
    tokens = asyncio.run(_burst(limited_url, token, 6, "/v1/token"))
    assert sorted(r.status_code for r in tokens) == [200] * 5 + [429], [r.text for r in tokens]
    assert {httpx.get(f"{limited_url}/v1/healthz").status_code for _ in range(10)} == {200}


def test_the_limit_holds_across_two_replicas(shared_url: str, token: str):
    """20 requests at once, spread over both replicas by the proxy: the shared bucket admits
    its burst of 5 (plus one token per 50 s of refill); a limit per replica would admit 10."""
    started = time.perf_counter()
    responses = asyncio.run(_burst(shared_url, token, 20))
    refilled = int(SHARED_REFILL_PER_S * (time.perf_counter() - started))
    statuses = [r.status_code for r in responses]
    assert set(statuses) == {200, 429}, statuses
    assert 5 <= statuses.count(200) <= 5 + refilled, statuses
    assert len({r.headers["x-replica"] for r in responses}) == 2  # both replicas answered


def test_a_forged_forwarded_for_gets_no_fresh_bucket(shared_url: str, token: str):
    """Twelve requests from this host, each naming another client in X-Forwarded-For: no
    proxy is trusted, so they all count against 127.0.0.1, and the sixth and later get 429
    (Serve's proxy, left to uvicorn's default, would have believed each header from loopback
    and given each request a fresh bucket). Runs after the test above has emptied the
    bucket: the first five are admitted only if a minute of refills has passed."""
    statuses, keys = [], set()
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
        started = time.perf_counter()
        for i in range(12):
            r = c.get(f"{shared_url}/v1/models", headers={"X-Forwarded-For": f"203.0.113.{i + 1}"})
            statuses.append(r.status_code)
            if r.status_code == 429:
                keys.add(r.json()["error_description"].split(" from ", 1)[1].split(";")[0])
        refilled = int(SHARED_REFILL_PER_S * (time.perf_counter() - started)) + 1
    # the bucket holds at most 5 (less if the test above just drew on it); one forged header
    # believed would have made room for all twelve
    assert statuses.count(200) <= 5 + refilled, statuses
    assert statuses[-6:] == [429] * 6, statuses
    assert keys == {"127.0.0.1"}, (statuses, keys)


def test_a_trusted_proxys_forwarded_clients_get_their_own_buckets(proxied_url: str, token: str):
    """127.0.0.1 is a trusted proxy of this application: the client it names in
    X-Forwarded-For is the one limited, each in its own bucket; what that client wrote
    itself further left is ignored."""
    time.sleep(1.1)
    headers = {"Authorization": f"Bearer {token}"}

    async def as_proxy(forwarded: list[str]) -> list[httpx.Response]:
        async with httpx.AsyncClient(headers=headers, timeout=30, limits=httpx.Limits(max_connections=len(forwarded))) as c:
            return await asyncio.gather(*(c.get(f"{proxied_url}/v1/models", headers={"X-Forwarded-For": f}) for f in forwarded))

    one_client = asyncio.run(as_proxy(["198.51.100.7"] * 6))
    assert sorted(r.status_code for r in one_client) == [200] * 5 + [429], [r.text for r in one_client]
    refused = next(r for r in one_client if r.status_code == 429)
    assert "from 198.51.100.7;" in refused.json()["error_description"]
    # the proxy appended 198.51.100.7 to what its client wrote: still that client's empty bucket
    # (refused by the replica's memory of the 429 until a token is due)
    r = httpx.get(f"{proxied_url}/v1/models", headers={**headers, "X-Forwarded-For": "10.9.9.9, 198.51.100.7"})
    assert r.status_code == 429 and "from 198.51.100.7;" in r.json()["error_description"]
    # twelve other clients behind the same proxy: a bucket each
    many = asyncio.run(as_proxy([f"198.51.100.{100 + i}" for i in range(12)]))
    assert [r.status_code for r in many] == [200] * 12, [r.text for r in many]
    # the proxy's own requests (no header) are its own
    assert httpx.get(f"{proxied_url}/v1/models", headers=headers).status_code == 200


def test_the_client_address_is_the_first_untrusted_hop_from_the_right():
    from serve.client_address import ClientAddress

    def scope(peer: str, *forwarded: str) -> dict:
        return {"client": (peer, 50000), "headers": [(b"x-forwarded-for", f.encode()) for f in forwarded]}

    nobody = ClientAddress([])
    assert nobody(scope("127.0.0.1", "1.2.3.4")) == "127.0.0.1"
    proxies = ClientAddress(["10.0.0.0/24", "::1/128"])
    assert proxies(scope("192.0.2.1", "1.2.3.4")) == "192.0.2.1"  # not from a trusted proxy: the header is ignored
    assert proxies(scope("10.0.0.5", "1.2.3.4")) == "1.2.3.4"
    assert proxies(scope("10.0.0.5", "6.6.6.6, 1.2.3.4, 10.0.0.7")) == "1.2.3.4"  # two proxies; 6.6.6.6 the client's own
    assert proxies(scope("10.0.0.5", "6.6.6.6", "1.2.3.4")) == "1.2.3.4"  # the header repeated
    assert proxies(scope("10.0.0.5", "1.2.3.4:5678")) == "1.2.3.4"
    assert proxies(scope("::1", "[2001:db8::1]:443")) == "2001:db8::1"
    assert proxies(scope("10.0.0.5", "1.2.3.4, garbage")) == "10.0.0.5"  # the last hop vouched for
    assert proxies(scope("10.0.0.5", "10.0.0.9")) == "10.0.0.9"  # all trusted: the first of them
    assert proxies(scope("10.0.0.5")) == "10.0.0.5"


@pytest.mark.parametrize("for_good", [False, True], ids=["restarted-by-ray", "killed-for-good"])
def test_a_killed_limiter_comes_back_and_the_replicas_limit_throughout(limited_url: str, token: str, for_good: bool):
    """The limiter actor is killed while requests arrive, either restarted by Ray or for good
    (then a replica makes it anew): every answer is a 200 or a 429, and within the bound
    below both replicas are back on a new limiter, whose shared bucket holds again.

    Killed for good, the replicas must have limited on their own meanwhile (their calls
    fail until one of them makes the actor anew). Restarted by Ray, they may not notice at
    all: a restart quicker than the gap between two of their calls shows only as the new
    epoch in the next answer, and that is as right."""
    import ray

    from actors import names
    from serve.rate_limit import limiter_name

    bound_s = 20.0  # Ray's restart of the actor (a new worker process) plus one probe interval; seconds here
    name = limiter_name(LIMITED)
    epoch = ray.get(ray.get_actor(name, namespace=names.NAMESPACE).settings.remote())["epoch"]
    headers = {"Authorization": f"Bearer {token}"}

    async def current_epoch() -> str | None:
        try:
            limiter = ray.get_actor(name, namespace=names.NAMESPACE)
            return (await asyncio.wait_for(limiter.settings.remote(), 1.0))["epoch"]
        except Exception:  # noqa: BLE001  (restarting, or not made anew yet)
            return None

    async def scenario() -> tuple[list[int], set[str], float]:
        statuses: list[int] = []
        states: set[str] = set()
        async with httpx.AsyncClient(headers=headers, timeout=30) as c:
            stop = asyncio.Event()

            async def load() -> None:
                while not stop.is_set():
                    statuses.append((await c.get(f"{limited_url}/v1/models")).status_code)
                    await asyncio.sleep(0.05)

            async def replica_states() -> dict[str, str]:
                seen: dict[str, str] = {}
                for _ in range(12):
                    r = await c.get(f"{limited_url}/v1/healthz")
                    seen[r.headers["x-replica"]] = r.json()["rate_limiter"]
                return seen

            loads = [asyncio.create_task(load()) for _ in range(2)]
            await asyncio.sleep(0.5)
            killed = time.monotonic()
            ray.kill(ray.get_actor(name, namespace=names.NAMESPACE), no_restart=for_good)
            seen: dict[str, str] = {}
            while True:
                assert time.monotonic() - killed < bound_s, f"not back on the shared limiter after {bound_s} s: {seen}"
                seen = await replica_states()
                states |= set(seen.values())
                renewed = await current_epoch() not in (None, epoch)
                if renewed and len(seen) == 2 and set(seen.values()) == {"shared"}:
                    break
                await asyncio.sleep(0.2)
            back_after = time.monotonic() - killed
            await asyncio.sleep(0.5)
            stop.set()
            await asyncio.gather(*loads)
        return statuses, states, back_after

    statuses, states, back_after = asyncio.run(scenario())
    print(f"limiter killed ({'for good' if for_good else 'Ray restarts it'}): both replicas back on a new one after "
          f"{back_after:.1f} s; states seen: {states}")
    assert statuses and set(statuses) <= {200, 429}, sorted(set(statuses))
    assert all(s == "shared" or s.startswith("local: the shared limiter is unreachable") for s in states), states
    if for_good:
        assert any(s.startswith("local") for s in states), states  # the replicas noticed, and limited on their own
    time.sleep(1.1)
    started = time.perf_counter()
    responses = asyncio.run(_burst(limited_url, token, 20))
    elapsed = time.perf_counter() - started
    assert 5 <= [r.status_code for r in responses].count(200) <= 5 + int(5 * elapsed), ([r.status_code for r in responses], elapsed)


# --- bodies --------------------------------------------------------------------------------


def _http_head(method: str, path: str, port: int, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_response(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += sock.recv(65536)
    return status, json.loads(body)


def test_a_body_declared_over_the_limit_is_refused_before_it_is_sent(serve_port: int, token: str):
    """Only the headers go out: each endpoint answers 413 on the declared Content-Length,
    without waiting for a byte of the body (before, /v1/token waited to read it all)."""
    from serve.body_limit import BATCH_BYTES, DEFAULT_BYTES, TOKEN_BYTES

    cases = [("/v1/token", TOKEN_BYTES, {"Content-Type": "application/x-www-form-urlencoded"}),
             ("/v1/decide", DEFAULT_BYTES, {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}),
             ("/v1/decide/batch", BATCH_BYTES, {"Content-Type": "application/json", "Authorization": f"Bearer {token}"})]
    for path, limit, headers in cases:
        with socket.create_connection(("127.0.0.1", serve_port), timeout=10) as sock:
            sock.sendall(_http_head("POST", path, serve_port, {**headers, "Content-Length": str(limit + 1)}))
            status, body = _read_response(sock)
        assert status == 413, (path, body)
        assert body["error"] == "request_too_large" and f"{limit:,} bytes" in body["error_description"], body


def test_a_streamed_body_is_refused_once_it_passes_the_limit(serve_port: int):
    """A chunked body (no Content-Length) of 256 KiB sent 1 KiB at a time to /v1/token
    (limit 4 KiB): the 413 arrives while the client is still sending, after a few KiB."""
    total, piece = 256 * 1024, b"a" * 1024
    head = _http_head("POST", "/v1/token", serve_port, {"Content-Type": "application/x-www-form-urlencoded",
                                                         "Transfer-Encoding": "chunked"})
    with socket.create_connection(("127.0.0.1", serve_port), timeout=10) as sock:
        sock.sendall(head)
        sent = 0
        while sent < total:
            if select.select([sock], [], [], 0)[0]:
                break  # an answer, while the body is still coming
            sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            sent += len(piece)
            time.sleep(0.005)
        else:
            sock.sendall(b"0\r\n\r\n")
        status, body = _read_response(sock)
    assert status == 413, body
    assert sent < 64 * 1024, sent  # answered after a few KiB, not after the whole body


def test_a_body_within_the_limit_still_arrives_whole(client: httpx.Client, ray_head: BotmainConfig):
    """A batch body of ~200 KB, chunked (no Content-Length), read across many chunks."""
    requests = [decide_payload(ray_head, seed=i) for i in range(100)]
    content = json.dumps({"requests": requests}).encode()

    def chunks():
        for i in range(0, len(content), 8192):
            yield content[i:i + 8192]

    r = client.post("/v1/decide/batch", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert len(r.json()["decisions"]) == 100


# --- secrets stay out of Serve's state --------------------------------------------------------


def test_no_secret_is_in_serves_stored_state_or_the_dashboard(urls: dict[str, str], ray_head: BotmainConfig, registry_dsn: str):
    """Everything Serve's controller keeps in the GCS (its checkpoints of the applications,
    deployments and their constructor arguments) and what the dashboard's Serve API shows:
    neither holds the JWT key, a client secret or the registry's DSN."""
    from ray import serve
    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_list

    from cluster import runtime

    stored = b"".join(_internal_kv_get(key, namespace=b"serve") or b"" for key in _internal_kv_list(b"", namespace=b"serve"))
    assert b"VenueSelector" in stored  # the checkpoints were read
    dashboard = json.dumps(runtime.dashboard_get(runtime.endpoints(ray_head.cluster).dashboard_url, "/api/serve/applications/"))
    assert "VenueSelector" in dashboard
    status = repr(serve.status())
    for name, secret in [("the JWT key", SECRET), *((f"{cid}'s secret", s) for cid, s in CLIENTS.items()), ("the DSN", registry_dsn)]:
        assert secret.encode() not in stored, f"{name} is in Serve's state in the GCS"
        assert secret not in dashboard and secret not in status, f"{name} is in the dashboard's Serve API"


# --- key rotation --------------------------------------------------------------------------


def _write_secret(path: str, text: str) -> None:
    """As an operator should: a new file in place of the old one, never a half-written one."""
    tmp = Path(path).with_suffix(".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
    os.replace(tmp, path)


def _wait_for_health(url: str, check, timeout: float = 10.0, samples: int = 1) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        healths = [httpx.get(f"{url}/v1/healthz").json() for _ in range(samples)]
        if all(check(h) for h in healths):
            return healths[0]
        assert time.monotonic() < deadline, healths
        time.sleep(0.1)


def test_keys_rotate_with_two_valid_at_once(urls: dict[str, str], base_url: str, token: str, serve_secret_files: dict[str, str]):
    """The three steps of serve.credentials on the session's key file, each picked up by the
    replicas within ``auth_reload_s``: the new key accepted, then signing, then alone."""
    path = serve_secret_files["BOTMAIN_JWT_SECRET_FILE"]
    new = "the-next-signing-key-" + "n" * 43
    old_kid, new_kid = key_id(SECRET), key_id(new)

    def issued_kid() -> str:
        return jwt.get_unverified_header(_token_for(base_url, "desk"))["kid"]

    def works(t: str) -> int:
        return httpx.get(f"{base_url}/v1/models", headers={"Authorization": f"Bearer {t}"}).status_code

    by_new = _sign(_claims(), new)
    assert works(by_new) == 401  # not a key yet
    try:
        _write_secret(path, f"{SECRET}\n{new}")  # 1: accepted, not signing
        _wait_for_health(base_url, lambda h: h["jwt_kids"] == [old_kid, new_kid])
        assert works(by_new) == 200 and works(token) == 200 and issued_kid() == old_kid
        _write_secret(path, f"{new},{SECRET}")  # 2: signing; the old key still verifies
        _wait_for_health(base_url, lambda h: h["jwt_kids"] == [new_kid, old_kid])
        fresh = _token_for(base_url, "desk")
        assert jwt.get_unverified_header(fresh)["kid"] == new_kid and works(fresh) == 200 and works(token) == 200
        _write_secret(path, "too-short")  # a bad edit is refused; the keys in use stay
        health = _wait_for_health(base_url, lambda h: h["auth_error"] is not None)
        assert "too short" in health["auth_error"] and health["jwt_kids"] == [new_kid, old_kid] and works(token) == 200
        _write_secret(path, new)  # 3: the old key retired
        _wait_for_health(base_url, lambda h: h["jwt_kids"] == [new_kid] and h["auth_error"] is None)
        r = httpx.get(f"{base_url}/v1/models", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401 and "not one this service accepts" in r.json()["error_description"]
        assert works(fresh) == 200
    finally:
        _write_secret(path, SECRET)
        for url, replicas in ((urls[APP], 1), (urls[LIMITED], 2), (urls[PROXIED], 1)):
            _wait_for_health(url, lambda h: h["jwt_kids"] == [old_kid] and h["auth_error"] is None, samples=4 * replicas)
    assert works(token) == 200


# --- metrics -------------------------------------------------------------------------------


def test_our_metrics_and_serves_reach_prometheus(client: httpx.Client):
    import ray

    node = next(n for n in ray.nodes() if n["Alive"])
    url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"

    def lines(text: str, name: str) -> list[str]:
        return [line for line in text.splitlines() if line.startswith((name + "{", name + "_total{"))]

    def reasons(text: str) -> set[str]:
        return {part.split("=", 1)[1].strip('"') for line in lines(text, "ray_botmain_selector_rejections_total")
                for part in line.split("{", 1)[1].split("}")[0].split(",") if part.startswith("reason=")}

    def complete(text: str) -> bool:
        decisions = lines(text, "ray_botmain_selector_decisions_total")
        return (any('model_version="v2"' in d and 'decided_by="model"' in d for d in decisions)
                and any('decided_by="rule"' in d for d in decisions)
                and {"unauthorized", "invalid", "rate_limited"} <= reasons(text)
                and bool(lines(text, "ray_botmain_selector_decision_latency_ms_bucket"))
                and bool(lines(text, "ray_serve_num_http_requests")))

    text = ""
    deadline = time.monotonic() + 60  # each process exports every few seconds
    while time.monotonic() < deadline:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        if complete(text):
            break
        time.sleep(2)
    assert lines(text, "ray_serve_num_http_requests"), "Serve's own request counter is not exported"
    assert {"unauthorized", "invalid", "rate_limited"} <= reasons(text), reasons(text)
    assert complete(text), lines(text, "ray_botmain_selector_decisions_total")


# --- the CLI -------------------------------------------------------------------------------


def _cli_env(tmp_path_factory, ray_head: BotmainConfig, port: int, secret_files: dict[str, str]) -> dict[str, str]:
    """A configuration directory like the session's, with the service on ``port``."""
    import yaml

    from tests.conftest import write_config_dir

    session_dir = ray_head.root / "configs"
    directory = write_config_dir(tmp_path_factory.mktemp("cli") / "configs", serve={"port": port})
    for name in ("store", "cluster"):  # the session's store and Ray head
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(yaml.safe_load((session_dir / f"{name}.yaml").read_text())))
    return {"BOTMAIN_CONFIG_DIR": str(directory), "BOTMAIN_PG_DSN": "", **secret_files}


def test_botmain_decide_prints_the_answer_with_live_or_recorded_state(tmp_path_factory, ray_head, lake_config, serve_port, base_url,
                                                                     models, serve_secret_files):
    from click.testing import CliRunner

    from cli.selector import decide

    env = _cli_env(tmp_path_factory, ray_head, serve_port, serve_secret_files)
    result = CliRunner().invoke(decide, ["SOL-PERP", "buy", "10", "--horizon", "8"], env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("decision   buy 10 SOL-PERP for 8 h: ") and "expected all-in cost" in lines[0]
    assert lines[1].startswith("decided by model, model v")
    assert any(line.startswith("ranked") for line in lines)
    result = CliRunner().invoke(decide, ["SOL-PERP", "buy", "10", "--json"], env=env)
    assert result.exit_code == 0 and json.loads(result.output)["decided_by"] == "model"
    result = CliRunner().invoke(decide, ["DOGE-PERP", "buy", "10"], env=env)
    assert result.exit_code == 1 and "422" in result.output and "instrument: unknown instrument 'DOGE-PERP'" in result.output


def test_botmain_serve_deploys_and_stops_the_application(tmp_path_factory, ray_head, serve_port, base_url, serve_secret_files):
    """Last: it replaces the tests' ``venue-selector`` with the CLI's own deployment."""
    from click.testing import CliRunner

    from cli.selector import serve_command

    env = _cli_env(tmp_path_factory, ray_head, serve_port, serve_secret_files)
    result = CliRunner().invoke(serve_command, [], env={k: v for k, v in env.items() if k != "BOTMAIN_JWT_SECRET_FILE"})
    assert result.exit_code == 1 and "BOTMAIN_JWT_SECRET is not set" in result.output
    result = CliRunner().invoke(serve_command, [], env=env)
    assert result.exit_code == 0, result.output
    assert f"url        http://127.0.0.1:{serve_port}/v1/decide" in result.output
    assert f"docs       http://127.0.0.1:{serve_port}/docs" in result.output
    assert "limit      5 requests/s per client IP" in result.output
    assert httpx.get(f"{base_url}/v1/healthz").status_code == 200
    result = CliRunner().invoke(serve_command, ["--stop"], env=env)
    assert result.exit_code == 0 and "stopped" in result.output
    assert httpx.get(f"{base_url}/v1/healthz").status_code == 404
