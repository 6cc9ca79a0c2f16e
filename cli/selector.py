"""``botmain serve`` and ``botmain decide``: deploy the venue selector on the running cluster,
and ask it for one decision over HTTP, as any client would (token first)."""

from __future__ import annotations

import base64
import json
import logging
import urllib.error
import urllib.parse
import urllib.request

import click

from cli.session import command_config, connect_ray
from cluster.config import BotmainConfig


def service_url(config: BotmainConfig) -> str:
    host = config.serve.host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"  # listening everywhere: this machine reaches it on loopback
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if config.serve.tls is not None else "http"
    return f"{scheme}://{host}:{config.serve.port}"


def _tls_context(config: BotmainConfig):
    from serve.proxy import ProxyConfigError, client_context

    try:
        return client_context(config)
    except ProxyConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("serve")
@click.option("--stop", is_flag=True, help="delete the application (and its rate limiter) instead")
def serve_command(stop: bool) -> None:
    """Deploy the venue selector (Ray Serve, FastAPI) on the running cluster."""
    import asyncio

    from cluster.store.connection import prepare_store, resolve_dsn
    from serve.app import APP_NAME, build_app
    from serve.credentials import AuthConfigError
    from serve.proxy import ProxyConfigError, http_options, running_differs
    from serve.rate_limit import stop_limiter

    config = command_config()
    if stop:
        connect_ray(config)
        from ray import serve

        serve.delete(APP_NAME)
        stop_limiter(APP_NAME)
        if not serve.status().applications:  # nothing else on Serve: its proxies go too, so the next
            serve.shutdown()                 # `botmain serve` starts them with serve.yaml's HTTP options
        click.echo(f"stopped    {APP_NAME}")
        return
    dsn = resolve_dsn(config, start_embedded=False)
    if dsn is None:
        raise click.ClickException("the embedded PostgreSQL is not running (botmain up): the model registry lives there")
    try:
        app = build_app(config)  # checks the credentials here; the replicas read their own
        options = http_options(config)
    except (AuthConfigError, ProxyConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    asyncio.run(prepare_store(dsn))  # the registry's tables (migrations) before a replica reads them
    connect_ray(config)
    from ray import serve
    from ray.serve.context import _get_global_client

    # Serve's INFO lines on the driver ("Started Serve", "Connecting to existing Serve app ...
    # New http_options will not be applied", said by serve.run of the Serve this command has
    # just started) would interleave with ours; its warnings still show.
    logging.getLogger("ray.serve").setLevel(logging.WARNING)

    cfg = config.serve
    serve.start(http_options=options)
    differs = running_differs(_get_global_client().http_config, options)
    if differs:
        raise click.ClickException(
            f"Serve already runs on this cluster with other HTTP options ({', '.join(differs)}), which cannot change "
            "while it runs: `botmain serve --stop`, then `botmain serve`"
        )
    try:
        serve.run(app, name=APP_NAME, route_prefix="/")
    except RuntimeError as exc:
        raise click.ClickException(f"{exc} (the replica's reason is in the Ray dashboard's Serve view and in "
                                   "its log under the session's logs/serve/)") from None
    url = service_url(config)
    health = _request(f"{url}/v1/healthz", context=_tls_context(config))
    click.echo(f"serving    {APP_NAME}: {cfg.replicas} replica(s), {health['decided_by']}"
               + (f" (model {health['model_version']})" if health["model_version"] else " (no model trained yet)"))
    click.echo(f"url        {url}/v1/decide")
    click.echo(f"docs       {url}/docs")
    click.echo(f"limit      {cfg.rate_limit.requests_per_s:g} requests/s per client IP (burst {cfg.rate_limit.burst})"
               + (f", X-Forwarded-For believed from {', '.join(cfg.trusted_proxies)}" if cfg.trusted_proxies else ""))


def _request(url: str, data: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 30,
             context=None) -> dict:
    request = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        raise click.ClickException(f"{url} answered {exc.code}: {_reason(body)}") from None
    except urllib.error.URLError as exc:
        raise click.ClickException(f"no venue selector answers at {url} ({exc.reason}): botmain serve") from None


def _reason(body: str) -> str:
    try:
        parsed = json.loads(body)
    except ValueError:
        return body[:300]
    if isinstance(parsed, dict) and "error_description" in parsed:
        return f"{parsed.get('error')}: {parsed['error_description']}"
    if isinstance(parsed, dict) and isinstance(parsed.get("detail"), list):
        return "; ".join(f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in parsed["detail"])
    if isinstance(parsed, dict) and "detail" in parsed:
        return str(parsed["detail"])
    return body[:300]


def access_token(url: str, context=None) -> str:
    """A token for the first client of BOTMAIN_API_CLIENTS (HTTP Basic, RFC 6749 2.3.1)."""
    from cluster.config import read_secret
    from serve.credentials import API_CLIENTS, AuthConfigError, parse_clients

    raw = read_secret(API_CLIENTS)
    if raw is None:
        raise click.ClickException(f"BOTMAIN_{API_CLIENTS} is not set: decide needs a client id and secret for /v1/token")
    try:
        client_id, client = next(iter(parse_clients(raw.get_secret_value()).items()))
    except AuthConfigError as exc:
        raise click.ClickException(str(exc)) from None
    pair = f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(client.secret.get_secret_value())}"
    headers = {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode(),
               "Content-Type": "application/x-www-form-urlencoded"}
    return _request(f"{url}/v1/token", b"grant_type=client_credentials", headers, context=context)["access_token"]


def render_decision(d: dict) -> list[str]:
    lines = [
        f"decision   {d['side']} {d['size']:g} {d['instrument']} for {d['horizon_h']:g} h: "
        f"{d['venue']} {d['kind']} ({d['market']}), expected all-in cost {d['expected_cost_bps']:.2f} bps",
        f"decided by {d['decided_by']}" + (f", model {d['model_version']}" if d.get("model_version") else ""),
    ]
    if d.get("features_from"):
        lines.append(f"market     {d['features_from']}")
    if d.get("note"):
        lines.append(f"note       {d['note']}")
    lines.append("ranked     " + ("market".ljust(24)) + "kind   cost bps")
    for i, a in enumerate(d["alternatives"], start=1):
        lines.append(f"  {i:>2}.     {a['market']:<24}{a['kind']:<6}{a['cost_bps']:>9.2f}")
    for e in d.get("excluded") or []:
        lines.append(f"left out   {e['market']}: {e['reason']}")
    return lines


def _positive_size(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not value > 0:
        side = ctx.params.get("side", "buy")
        raise click.BadParameter(
            f"{value:g}: SIZE is an amount in base units (SOL for SOL-PERP), above 0; the side says the direction "
            f"(botmain decide {ctx.params.get('instrument', 'SOL-PERP')} {'sell' if side == 'buy' else 'buy'} {abs(value):g})"
            if value < 0 else f"{value:g}: SIZE is an amount in base units (SOL for SOL-PERP), above 0"
        )
    return value


# A negative SIZE (`decide SOL-PERP buy -5`) would read as an unknown option `-5`: options the
# command does not have are passed on as arguments, so SIZE's own check can refuse it by name.
@click.command("decide", context_settings={"ignore_unknown_options": True})
@click.argument("instrument")
@click.argument("side", type=click.Choice(["buy", "sell"]))
@click.argument("size", type=float, callback=_positive_size)
@click.option("--horizon", "horizon_h", type=float, default=24.0, show_default=True, help="holding time, hours")
@click.option("--venue", "venues", multiple=True, help="consider only this venue (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print the service's JSON answer")
def decide(instrument: str, side: str, size: float, horizon_h: float, venues: tuple[str, ...], as_json: bool) -> None:
    """Ask the running venue selector where to trade, e.g. `botmain decide SOL-PERP buy 10`.

    SIZE is in base units of the instrument's asset (10 = 10 SOL for SOL-PERP or SOL-USDC).
    """

    config = command_config()
    url, context = service_url(config), _tls_context(config)
    token = access_token(url, context)
    body = {"instrument": instrument, "side": side, "size": size, "horizon_h": horizon_h}
    if venues:
        body["venues"] = list(venues)
    answer = _request(f"{url}/v1/decide", json.dumps(body).encode(),
                      {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}, context=context)
    if as_json:
        click.echo(json.dumps(answer))
        return
    for line in render_decision(answer):
        click.echo(line)
