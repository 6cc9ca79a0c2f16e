"""The venue selector as a Ray Serve application with a FastAPI ingress.

    POST /v1/token                     client credentials -> a short-lived JWT (serve.auth)
    POST /v1/decide                    one decision            (bearer token)
    POST /v1/decide/batch              up to 1,000 decisions   (bearer token)
    GET  /v1/models                    the registry's versions (bearer token)
    POST /v1/models/{version}/activate hot reload              (bearer token)
    GET  /v1/healthz                   liveness, the model this replica serves, each decision path's outcomes (open)
    GET  /docs                         OpenAPI (Swagger UI)

Every request passes, in this order, ASGI middlewares that answer before any route runs:
the shared per-client rate limit (serve.rate_limit; not for the health check), the bearer
token and its scope (serve.auth, serve.scopes; not for the token endpoint, the health check
and the docs), and the body's size (serve.body_limit). Concurrent ``/v1/decide`` requests in a replica meet in ``@serve.batch``
and share one ``Selector.decide_many`` call (one model call for all their candidates). A
batch in which a request has no features of its own runs on a worker thread, so that
reading the lake or the MDS (the state provider) does not stall the event loop.

Hot reload: a replica loads a version's artifact first and then swaps one reference (the
``Selector``), so a request in flight finishes on the model it started with and none fails.
``activate`` does that at once in the replica that answers it; every replica also polls the
registry's active version every ``serve.model_poll_s`` and swaps when it changed.

The execution server calls the same deployment through a handle (``decide``,
``decide_many``): inside the cluster, without HTTP, token or rate limit.

Market data never makes a 5xx. A candidate without a current, valid state (its lake
recording ended or has a gap, a value out of bounds, live or recorded) is left out of that
decision and named in its ``excluded``; when none remains, the answer is 409 (``type``
``no_candidate``, each candidate's reason in ``excluded``): the request is valid, the
service's market state cannot serve it now (retry later, or send ``features``). The health
check counts each decision path's outcomes and shows the last failure (``status``
``degraded`` while a path's latest outcome is one), not just ``ok``.

Secrets. A replica reads the JWT keys, the API clients (serve.credentials) and the
PostgreSQL DSN (``resolve_dsn``) from its own process environment, the one ``botmain up``
started Ray with, and re-reads the keys and clients every ``serve.auth_reload_s`` (their
``_FILE`` variants can change: key rotation, a new client). Its constructor gets only the
configuration and the application's name: Serve keeps constructor arguments in its
controller's state in the GCS and shows them in the dashboard.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from typing import Annotated

import asyncpg
from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from cluster.config import BotmainConfig
from cluster.store.connection import resolve_dsn
from serve import registry
from serve.asgi import ReplicaHeader
from serve.auth import AuthError, Authenticator, BearerAuthMiddleware
from serve.body_limit import BodyLimitMiddleware
from serve.client_address import ClientAddress
from serve.credentials import AuthConfigError, Credentials
from serve.proxy import check_environment
from serve.rate_limit import RateLimitMiddleware, connect_limiter
from serve.selector.candidates import SelectorError
from serve.selector.model import Decision, DecisionRequest, NoCandidate, Selector, SelectorModel

log = logging.getLogger(__name__)

APP_NAME = "venue-selector"
MODEL_NAME = "venue_selector"
ARTIFACT_FORMAT = "xgboost-ubj"
MAX_BATCH_DECISIONS = 1000
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$"
LATENCY_BOUNDARIES_MS = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]


# --- request and response bodies ---------------------------------------------------------


class BatchDecisionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: list[DecisionRequest] = Field(min_length=1, max_length=MAX_BATCH_DECISIONS)


class BatchDecisionResponse(BaseModel):
    decisions: list[Decision]


class TokenResponse(BaseModel):
    access_token: str
    token_type: str
    expires_in: int


class ModelsResponse(BaseModel):
    models: list[dict]
    active: str | None  # the registry's active version
    serving: str | None  # the version this replica answers with (None: the rule)


class ActivateResponse(BaseModel):
    version: str
    previous: str | None


class PathHealth(BaseModel):
    """What one decision path (``http``, ``batch``, ``handle``) answered since the replica started."""

    answered: int = 0  # decisions given
    refused: int = 0  # 422: the request's own fault
    unavailable: int = 0  # 409: no candidate with a usable market state
    failed: int = 0  # anything else (a 500): a bug to report
    last_outcome: str | None = None  # answered | refused | unavailable | failed
    last_problem: str | None = None  # the latest unavailable or failed answer: what it said
    last_problem_at: str | None = None  # when (UTC, ISO 8601)


class HealthResponse(BaseModel):
    status: str  # ok | degraded (a decision path's latest outcome was unavailable or failed; ``problems`` says which)
    problems: list[str]
    replica: str
    decided_by: str  # model | rule
    model_version: str | None
    registry_error: str | None  # the last poll's error, if it failed
    model_error: str | None  # why the active version is not served, if it is not
    predictor: str | None  # how the model predicts: "compiled forest" or "xgboost (<why not compiled>)"
    batches: int  # @serve.batch calls of this replica since it started (one model call each)
    batched_requests: int  # the single decide requests they answered
    rate_limiter: str  # "shared", or why this replica limits on its own for now
    jwt_kids: list[str]  # the key ids this replica accepts, the signing one first (for rotations)
    auth_error: str | None  # why the last re-read of the keys and clients was refused (the previous ones stay)
    decision_paths: dict[str, PathHealth]  # http | batch | handle -> outcomes
    market_states: dict[str, dict]  # base asset -> the latest state lookup: source, candidates, excluded (venue -> why)


# --- errors ------------------------------------------------------------------------------


class RequestError(Exception):
    """Input the selector cannot serve: a 422 naming the field, like pydantic's; or 409
    (``no_candidate``) when the service's market state leaves no candidate, each named."""

    def __init__(self, loc: list, message: str, status: int = 422, excluded: list[dict] | None = None) -> None:
        super().__init__(message)
        self.loc = loc
        self.message = message
        self.status = status
        self.excluded = excluded

    def detail(self) -> list[dict]:
        item = {"type": "no_candidate" if self.status == 409 else "selector_error", "loc": self.loc, "msg": self.message}
        if self.excluded is not None:
            item["excluded"] = self.excluded
        return [item]


class ModelLoadError(RuntimeError):
    """A registered version this code cannot serve (format, features, corrupt artifact)."""


@dataclass(frozen=True)
class Rejected:
    """One request of a batch that the selector refused: which field, and why (422), or that
    no candidate had a usable market state (409, each one's reason in ``excluded``)."""

    field: str | None
    message: str
    status: int = 422
    excluded: list[dict] | None = None

    @classmethod
    def of(cls, request: DecisionRequest, exc: SelectorError) -> Rejected:
        if isinstance(exc, NoCandidate) and not exc.from_request:
            return cls(_field_of_candidates(request), str(exc), 409, [e.model_dump() for e in exc.excluded])
        return cls("features", str(exc))


def _field_of_candidates(request: DecisionRequest) -> str:
    return "venues" if request.venues else "instrument"


def _non_finite(decision: Decision) -> bool:
    values = chain([decision.expected_cost_bps], (a.cost_bps for a in decision.alternatives),
                   *(row.values() for row in decision.features.values()))
    return not all(map(math.isfinite, values))


NON_FINITE = "these values give a non-finite cost or feature (size x price beyond the float range?)"


# --- metrics -----------------------------------------------------------------------------


class SelectorMetrics:
    """Prometheus metrics through Ray's metrics agent (exported with the ``ray_`` prefix),
    beside Serve's own request metrics."""

    def __init__(self) -> None:
        from ray.util import metrics

        self._decisions = metrics.Counter(
            "botmain_selector_decisions_total", "decisions by chosen venue, market kind, decider and model version",
            tag_keys=("venue", "kind", "decided_by", "model_version"),
        )
        self._latency = metrics.Histogram(
            "botmain_selector_decision_latency_ms", "time to decide, from the request's arrival at the replica, ms",
            boundaries=LATENCY_BOUNDARIES_MS, tag_keys=("path",),
        )
        self._rejections = metrics.Counter(
            "botmain_selector_rejections_total",
            "requests refused, by reason (unauthorized 401, forbidden 403, no_candidate 409, too_large 413, rate_limited 429, invalid 422)",
            tag_keys=("reason",),
        )

    def timed(self, path: str, started: float) -> None:
        self._latency.observe((time.perf_counter() - started) * 1e3, tags={"path": path})

    def decided(self, decisions: list[Decision]) -> None:
        """Counted once per batch: one increment per (venue, kind, decider, version) in it."""
        counts = Counter((d.venue, d.kind, d.decided_by, d.model_version or "none") for d in decisions)
        for (venue, kind, decided_by, version), n in counts.items():
            self._decisions.inc(n, tags={"venue": venue, "kind": kind, "decided_by": decided_by, "model_version": version})

    def rejected(self, reason: str) -> None:
        self._rejections.inc(tags={"reason": reason})


# --- the deployment ----------------------------------------------------------------------


@serve.deployment(name="VenueSelector", ray_actor_options={"num_cpus": 0})
@serve.ingress()
class VenueSelector:
    """One replica: the selector with its current model, the registry pool, the auth and the
    rate limiter's client side. Built by ``build_app``; its secrets come from its own
    environment (module docstring), never from these arguments."""

    async def __init__(self, config: BotmainConfig, app_name: str) -> None:
        self.config = config
        self._loop = asyncio.get_running_loop()  # Serve runs all of a replica's code on this loop
        cfg = config.serve
        check_environment()
        try:
            self.auth = Authenticator(cfg.jwt, Credentials.from_environment(cfg.jwt.algorithm))
        except AuthConfigError as exc:
            raise RuntimeError(f"the venue selector cannot start: {exc}") from None
        self.auth_error: str | None = None
        self.client_address = ClientAddress(cfg.trusted_proxies)
        self.metrics = SelectorMetrics()
        self.replica = serve.get_replica_context().replica_id.unique_id
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="selector")
        self._batched.set_max_batch_size(cfg.batch.max_batch_size)
        self._batched.set_batch_wait_timeout_s(cfg.batch.wait_timeout_s)
        self.admission = await connect_limiter(app_name, cfg.rate_limit.requests_per_s, cfg.rate_limit.burst, cfg.replicas)
        self.selector = Selector(config)
        self.registry_error: str | None = None
        self.model_error: str | None = None
        self._failed_version: str | None = None
        self._model_lock = asyncio.Lock()
        self._states = None
        self.batches = self.batched_requests = 0
        self.paths = {path: PathHealth() for path in ("http", "batch", "handle")}
        dsn = await self._on_worker(lambda: resolve_dsn(config, start_embedded=False))
        if dsn is None:
            raise RuntimeError("the venue selector cannot read the model registry: BOTMAIN_PG_DSN is not set in Ray's "
                               "environment and the embedded PostgreSQL of store.yaml is not running on this node")
        try:
            self._pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2, command_timeout=30)
            await self._sync_with_registry()
        except (OSError, asyncpg.PostgresError) as exc:
            raise RuntimeError(f"the venue selector cannot read the model registry: {type(exc).__name__}: {exc}") from None
        self._poll_task = self._loop.create_task(self._poll_registry())
        self._auth_task = self._loop.create_task(self._watch_credentials())
        log.info("venue selector replica %s up, %s, JWT keys %s", self.replica, self._serving_text(), self.auth.credentials.keys.kids)

    def __serve_build_asgi_app__(self) -> FastAPI:
        return build_api(self)

    async def __del__(self) -> None:
        for task in (getattr(self, "_poll_task", None), getattr(self, "_states_task", None), getattr(self, "_auth_task", None)):
            if task is not None:
                task.cancel()
        if getattr(self, "_pool", None) is not None:
            await self._pool.close()
        self._executor.shutdown(wait=False)

    async def check_health(self) -> None:
        for what, task in (("the registry poll", self._poll_task), ("the credentials' re-read", self._auth_task)):
            if task.done() and not task.cancelled():
                raise RuntimeError(f"{what} stopped: {task.exception()!r}")

    # --- credentials -------------------------------------------------------------------

    async def _watch_credentials(self) -> None:
        """Re-read the keys and clients; a changed set replaces the authenticator (tokens
        of a key no longer listed are refused from then on), a malformed one is refused and
        the previous set stays (``auth_error`` in the health check says why)."""
        cfg = self.config.serve
        while True:
            await asyncio.sleep(cfg.auth_reload_s)
            try:
                credentials = Credentials.from_environment(cfg.jwt.algorithm)
            except AuthConfigError as exc:
                if self.auth_error != str(exc):
                    log.error("replica %s keeps its credentials: the new ones are refused: %s", self.replica, exc)
                self.auth_error = str(exc)
                continue
            self.auth_error = None
            if credentials != self.auth.credentials:
                self.auth = Authenticator(cfg.jwt, credentials)
                log.info("replica %s: credentials changed: JWT keys %s, clients %s", self.replica,
                         credentials.keys.kids, sorted(credentials.clients))

    # --- deciding --------------------------------------------------------------------

    @property
    def model_version(self) -> str | None:
        model = self.selector.model
        return model.version if model is not None else None

    def _serving_text(self) -> str:
        return f"model {self.model_version}" if self.model_version else "no model (the rule decides)"

    def _provider(self, request: DecisionRequest, candidates):
        """Market state for requests without their own features: live from the MDS, else
        the lake (serve.selector.states); created on first use, on the worker thread."""
        if self._states is None:
            from serve.selector.states import MarketStates

            self._states = MarketStates(self.config)
            self._states_task = self._states.start(self._loop)
        return self._states(request, candidates)

    def _decide_isolated(self, selector: Selector, requests: list[DecisionRequest]) -> list[Decision | Rejected]:
        """One model call for all; if one request is refused, each alone, so that the others
        still get their answer and the refused one its reason."""
        try:
            results: list[Decision | Rejected] = list(selector.decide_many(requests, self._provider))
        except SelectorError:
            results = []
            for request in requests:
                try:
                    results.append(selector.decide_many([request], self._provider)[0])
                except SelectorError as exc:
                    results.append(Rejected.of(request, exc))
        return [Rejected(None, NON_FINITE) if isinstance(r, Decision) and _non_finite(r) else r for r in results]

    async def _on_worker(self, fn, *args):
        return await self._loop.run_in_executor(self._executor, fn, *args)

    async def _decide(self, selector: Selector, requests: list[DecisionRequest]) -> list[Decision | Rejected]:
        """Requests that carry their market state are decided right here (about a
        millisecond of CPU per model call, less than a thread hand-off costs under load);
        a request that needs the state provider (lake reads, the MDS) goes to the worker thread."""
        if all(r.features is not None for r in requests):
            return self._decide_isolated(selector, requests)
        return await self._on_worker(self._decide_isolated, selector, requests)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)  # set from serve.yaml in __init__
    async def _batched(self, requests: list[DecisionRequest]) -> list[Decision | Rejected]:
        results = await self._decide(self.selector, requests)
        self.batches += 1
        self.batched_requests += len(requests)
        self.metrics.decided([r for r in results if isinstance(r, Decision)])
        return results

    def _check_candidates(self, selector: Selector, request: DecisionRequest, loc: list) -> None:
        try:
            selector.candidates_for(request)
        except SelectorError as exc:
            raise RequestError([*loc, _field_of_candidates(request)], str(exc)) from None

    def _outcome(self, path: str, outcome: str, problem: str | None = None) -> None:
        health = self.paths[path]
        setattr(health, outcome, getattr(health, outcome) + 1)
        health.last_outcome = outcome
        if problem is not None:
            health.last_problem = problem
            health.last_problem_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    async def _counted(self, path: str, decide):
        """``decide()``, its outcome counted for the health check."""
        try:
            result = await decide()
        except RequestError as exc:
            if exc.status == 409:
                self._outcome(path, "unavailable", f"409 {'.'.join(map(str, exc.loc))}: {exc.message}")
            else:
                self._outcome(path, "refused")
            raise
        except Exception as exc:
            self._outcome(path, "failed", f"{type(exc).__name__}: {exc}")
            log.exception("replica %s: a decision on the %s path failed", self.replica, path)
            raise
        self._outcome(path, "answered")
        return result

    async def decide_one(self, request: DecisionRequest, path: str = "http") -> Decision:
        return await self._counted(path, lambda: self._decide_one(request, path))

    async def _decide_one(self, request: DecisionRequest, path: str) -> Decision:
        started = time.perf_counter()
        self._check_candidates(self.selector, request, ["body"])
        result = await self._batched(request)
        if isinstance(result, Rejected):
            raise RequestError(["body", result.field] if result.field else ["body"], result.message, result.status, result.excluded)
        self.metrics.timed(path, started)
        return result

    async def decide_list(self, requests: list[DecisionRequest], path: str = "batch") -> list[Decision]:
        return await self._counted(path, lambda: self._decide_list(requests, path))

    async def _decide_list(self, requests: list[DecisionRequest], path: str) -> list[Decision]:
        started = time.perf_counter()
        selector = self.selector
        for i, request in enumerate(requests):
            self._check_candidates(selector, request, ["body", "requests", i])
        results = await self._decide(selector, requests)
        for i, result in enumerate(results):
            if isinstance(result, Rejected):
                loc = ["body", "requests", i] + ([result.field] if result.field else [])
                raise RequestError(loc, result.message, result.status, result.excluded)
        self.metrics.decided(results)
        self.metrics.timed(path, started)
        return results

    # --- the handle path (the execution server, inside the cluster) ---------------------

    async def decide(self, request: dict) -> dict:
        """One decision through a ``DeploymentHandle``: a ``DecisionRequest`` as a dict in,
        a ``Decision`` as a dict out; refused input raises ``ValueError`` with the reason."""
        try:
            decision = await self.decide_one(DecisionRequest.model_validate(request), path="handle")
        except RequestError as exc:
            raise ValueError(f"{'.'.join(map(str, exc.loc))}: {exc.message}") from None
        return decision.model_dump()

    async def decide_many(self, requests: list[dict]) -> list[dict]:
        try:
            decisions = await self.decide_list([DecisionRequest.model_validate(r) for r in requests], path="handle")
        except RequestError as exc:
            raise ValueError(f"{'.'.join(map(str, exc.loc))}: {exc.message}") from None
        return [d.model_dump() for d in decisions]

    # --- models ----------------------------------------------------------------------

    async def _load(self, version: str) -> SelectorModel:
        async with self._pool.acquire() as conn:
            entry = await registry.get(conn, version)
            if entry.name != MODEL_NAME:
                raise registry.RegistryError(f"model version {version!r} is a {entry.name!r} model, not {MODEL_NAME!r}")
            fmt, raw = await registry.artifact(conn, version)
        if fmt != ARTIFACT_FORMAT:
            raise ModelLoadError(f"model version {version!r} is stored as {fmt!r}; this service loads {ARTIFACT_FORMAT!r}")
        try:
            return await self._on_worker(SelectorModel.from_bytes, version, raw, entry.features)
        except SelectorError as exc:
            raise ModelLoadError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001  (xgboost's own errors for a corrupt artifact)
            raise ModelLoadError(f"model version {version!r} does not load: {type(exc).__name__}: {exc}") from None

    def _swap(self, model: SelectorModel | None) -> None:
        """Requests in flight keep the ``Selector`` they took; new ones get this one."""
        previous = self.model_version
        self.selector = Selector(self.config, model)
        log.info("replica %s: %s -> %s", self.replica, previous or "rule", self.model_version or "rule")

    async def activate(self, version: str) -> ActivateResponse:
        async with self._model_lock:
            model = await self._load(version)
            async with self._pool.acquire() as conn:
                await registry.activate(conn, MODEL_NAME, version)
            previous = self.model_version
            self._swap(model)
            self._failed_version, self.model_error = None, None
        return ActivateResponse(version=version, previous=previous)

    async def _sync_with_registry(self) -> None:
        """Serve the registry's active version (or the rule if none is active)."""
        async with self._pool.acquire() as conn:
            entry = await registry.active(conn, MODEL_NAME)
        target = entry.version if entry is not None else None
        if target == self.model_version or (target is not None and target == self._failed_version):
            return
        async with self._model_lock:
            if target == self.model_version:
                return
            if target is None:
                self._swap(None)
                return
            try:
                model = await self._load(target)
            except (ModelLoadError, registry.RegistryError) as exc:
                self._failed_version, self.model_error = target, str(exc)
                log.error("replica %s cannot serve the active model %s: %s", self.replica, target, exc)
                return
            self._swap(model)
            self._failed_version, self.model_error = None, None

    async def _poll_registry(self) -> None:
        while True:
            await asyncio.sleep(self.config.serve.model_poll_s)
            try:
                await self._sync_with_registry()
                self.registry_error = None
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError) as exc:
                if self.registry_error is None:
                    log.warning("replica %s: the registry poll failed: %s", self.replica, exc)
                self.registry_error = f"{type(exc).__name__}: {exc}"

    async def list_models(self) -> ModelsResponse:
        async with self._pool.acquire() as conn:
            entries = await registry.list_models(conn, MODEL_NAME)
        active = next((e.version for e in entries if e.is_active), None)
        return ModelsResponse(models=[e.as_dict() for e in entries], active=active, serving=self.model_version)

    def health(self) -> HealthResponse:
        model = self.selector.model
        problems = [f"decide ({path}): last answer {h.last_outcome}: {h.last_problem} (at {h.last_problem_at})"
                    for path, h in self.paths.items() if h.last_outcome in ("unavailable", "failed")]
        return HealthResponse(
            status="degraded" if problems else "ok", problems=problems, replica=self.replica, decided_by="model" if self.model_version else "rule",
            model_version=self.model_version, registry_error=self.registry_error, model_error=self.model_error,
            predictor=model.predictor if model is not None else None, batches=self.batches, batched_requests=self.batched_requests,
            rate_limiter=self.admission.state, jwt_kids=self.auth.credentials.keys.kids, auth_error=self.auth_error,
            decision_paths={path: h.model_copy() for path, h in self.paths.items()},
            market_states=dict(self._states.last) if self._states is not None else {},
        )


# --- the HTTP API ------------------------------------------------------------------------

API_DESCRIPTION = """Which venue and market kind (perp or spot) costs least all-in for one trade.

Get a token with client credentials (`POST /v1/token`, form-encoded
`grant_type=client_credentials`, HTTP Basic or `client_id`/`client_secret` fields), then send
it as `Authorization: Bearer <token>`. A token carries its client's scopes: `decide` for
the decisions and the model list, `admin` to activate a model (403 naming the scope
otherwise). Rate limit: per client IP, shared by all replicas (429 with `Retry-After`).
Bodies over the endpoint's limit: 413."""


BEARER = {"security": [{"HTTPBearer": []}]}  # an operation's OpenAPI: needs a bearer token


def _document_bearer_security(api: FastAPI) -> None:
    """The OpenAPI schema names the bearer scheme that BearerAuthMiddleware enforces (the
    operations marked with ``BEARER`` refer to it), so /docs offers "Authorize"."""
    build = api.openapi

    def openapi() -> dict:
        if api.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {}).setdefault("securitySchemes", {})["HTTPBearer"] = {
                "type": "http", "scheme": "bearer", "bearerFormat": "JWT", "description": "an access token from POST /v1/token",
            }
            api.openapi_schema = schema
        return api.openapi_schema

    api.openapi = openapi


def _json(model: BaseModel, status: int = 200) -> Response:
    return Response(content=model.model_dump_json(), status_code=status, media_type="application/json")


def build_api(service: VenueSelector) -> FastAPI:
    """The replica's FastAPI app; routes call into ``service``."""
    api = FastAPI(title="Botmain venue selector", version="1", description=API_DESCRIPTION)
    # the last added runs first: replica header, rate limit, bearer token and scope, body size, then the route
    api.add_middleware(BodyLimitMiddleware, on_reject=service.metrics.rejected)
    api.add_middleware(BearerAuthMiddleware, get_authenticator=lambda: service.auth, on_reject=service.metrics.rejected)
    api.add_middleware(RateLimitMiddleware, get_admission=lambda: service.admission, client_address=service.client_address,
                       rate=service.config.serve.rate_limit.requests_per_s, on_reject=service.metrics.rejected)
    api.add_middleware(ReplicaHeader, replica=service.replica)
    _document_bearer_security(api)

    @api.exception_handler(AuthError)
    async def on_auth_error(request: Request, exc: AuthError) -> JSONResponse:  # the token endpoint's errors
        service.metrics.rejected("unauthorized" if exc.status == 401 else "bad_token_request")
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @api.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's 422 shape without echoing the input: it may hold NaN or Infinity, which
        JSON cannot carry (the default handler would fail with a 500), or be large."""
        service.metrics.rejected("invalid")
        detail = [{"type": e["type"], "loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @api.exception_handler(RequestError)
    async def on_refused(request: Request, exc: RequestError) -> JSONResponse:
        service.metrics.rejected("no_candidate" if exc.status == 409 else "invalid")
        return JSONResponse({"detail": exc.detail()}, status_code=exc.status)

    @api.exception_handler(registry.RegistryError)
    async def on_unknown_model(request: Request, exc: registry.RegistryError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @api.exception_handler(ModelLoadError)
    async def on_unloadable(request: Request, exc: ModelLoadError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @api.post(
        "/v1/token", response_model=TokenResponse, tags=["auth"],
        summary="OAuth 2.0 client credentials grant (RFC 6749 4.4)",
        openapi_extra={"requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
            "type": "object", "required": ["grant_type"],
            "properties": {"grant_type": {"type": "string", "enum": ["client_credentials"]},
                           "client_id": {"type": "string"}, "client_secret": {"type": "string", "format": "password"},
                           "scope": {"type": "string", "description": "space-separated subset of the client's scopes (default: all of them)"}},
        }}}}},
    )
    async def token(request: Request) -> JSONResponse:
        body = await request.body()
        issued = service.auth.token_response(request.headers.get("content-type", ""), body, request.headers.get("authorization"))
        return JSONResponse(issued, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    @api.post("/v1/decide", response_model=Decision, tags=["decide"], openapi_extra=BEARER,
              summary="The cheapest venue and market kind for one trade, with the ranked alternatives",
              responses={409: {"description": "no candidate has a usable market state now (each one's reason in detail[0].excluded)"}})
    async def decide(body: DecisionRequest) -> Response:
        return _json(await service.decide_one(body))

    @api.post("/v1/decide/batch", response_model=BatchDecisionResponse, tags=["decide"], openapi_extra=BEARER,
              summary=f"Up to {MAX_BATCH_DECISIONS} decisions in one request (one model call)")
    async def decide_batch(body: BatchDecisionRequest) -> Response:
        return _json(BatchDecisionResponse(decisions=await service.decide_list(body.requests)))

    @api.get("/v1/models", response_model=ModelsResponse, tags=["models"], openapi_extra=BEARER)
    async def models() -> Response:
        return _json(await service.list_models())

    @api.post("/v1/models/{version}/activate", response_model=ActivateResponse, tags=["models"],
              openapi_extra=BEARER,
              summary="Make a version active: this replica at once, the others within serve.model_poll_s")
    async def activate(version: Annotated[str, Path(pattern=VERSION_PATTERN)]) -> Response:
        return _json(await service.activate(version))

    @api.get("/v1/healthz", response_model=HealthResponse, tags=["health"])
    async def healthz() -> Response:
        return _json(service.health())

    return api


def build_app(config: BotmainConfig, app_name: str = APP_NAME, environ: dict[str, str] | None = None):
    """The bound Serve application: ``serve.run(build_app(config), name=app_name)``.

    Checks the credentials in ``environ`` (default: this process's environment) first, so
    that a missing or malformed one fails here with ``AuthConfigError`` naming it rather
    than in every replica; the replicas read their own (module docstring). Nothing secret
    is bound: the configuration holds none (the loader refuses secrets in YAML)."""
    cfg = config.serve
    Credentials.from_environment(cfg.jwt.algorithm, environ)
    return VenueSelector.options(
        num_replicas=cfg.replicas,
        # room for a full batch beside the requests still being parsed or answered
        max_ongoing_requests=max(100, 2 * cfg.batch.max_batch_size),
    ).bind(config, app_name)
