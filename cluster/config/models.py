"""Pydantic models for the YAML files in ``configs/``; one model per file.

Every model forbids unknown keys, so a typo is an error rather than a silent default.
Secrets never live here: see ``cluster.config.secrets``.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from cluster.domain import MarketKind, VenueKind

PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Port = Annotated[int, Field(ge=1, le=65535)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- cluster.yaml -------------------------------------------------------------------


class HeadConfig(Strict):
    """How ``botmain up`` starts a local Ray head."""

    port: Port = 6379
    node_ip_address: str | None = Field(
        None, description="address other nodes reach this head at; null lets Ray pick this machine's"
    )
    dashboard_host: str = "127.0.0.1"
    dashboard_port: Port = 8265
    client_server_port: Port = 10001
    dashboard_agent_listen_port: Port = Field(
        52365, description="the node's dashboard agent, through which jobs are submitted (Ray's default port)"
    )
    num_cpus: Annotated[int, Field(ge=1)] | None = None
    object_store_memory_mb: Annotated[int, Field(ge=64)] | None = None
    temp_dir: str | None = Field(None, description="Ray session/log directory (default /tmp/ray)")


class ClusterConfig(Strict):
    address: str | None = Field(
        default=None,
        description="Ray address to join (host:port of a head's GCS); null starts a local head.",
    )
    head: HeadConfig = HeadConfig()


# --- store.yaml ---------------------------------------------------------------------


class EmbeddedPostgresConfig(Strict):
    data_dir: str = "var/pg"
    # Generated once (mode 0600) where it is missing; every process reads the password
    # from here. Relative paths, like data_dir's, are under the project root.
    password_file: str = "var/pg.password"
    host: str = "127.0.0.1"
    port: Port = 54329
    database: str = "botmain"


class PoolConfig(Strict):
    min_size: Annotated[int, Field(ge=0)] = 1
    max_size: Annotated[int, Field(ge=1)] = 8

    @model_validator(mode="after")
    def _ordered(self) -> PoolConfig:
        if self.min_size > self.max_size:
            raise ValueError(f"min_size ({self.min_size}) exceeds max_size ({self.max_size})")
        return self


class ReconnectConfig(Strict):
    """How long a writer keeps trying when PostgreSQL goes away mid-write."""

    deadline_s: PositiveFloat = 120.0
    initial_backoff_s: PositiveFloat = 0.1
    max_backoff_s: PositiveFloat = 5.0


class PostgresConfig(Strict):
    embedded: EmbeddedPostgresConfig = EmbeddedPostgresConfig()
    pool: PoolConfig = PoolConfig()
    command_timeout_s: PositiveFloat = 300.0
    reconnect: ReconnectConfig = ReconnectConfig()
    copy_batch_rows: Annotated[int, Field(ge=1)] = 100_000


class LakeConfig(Strict):
    root: str = "var/lake"


class StoreConfig(Strict):
    postgres: PostgresConfig = PostgresConfig()
    lake: LakeConfig = LakeConfig()


# --- venues.yaml --------------------------------------------------------------------


class VenueConfig(Strict):
    kind: VenueKind
    maker_fee: float = Field(0.0, ge=-0.01, le=0.01, description="fraction of notional")
    taker_fee: float = Field(0.0, ge=0, le=0.01, description="fraction of notional")
    ccxt_id: str | None = Field(None, description="ccxt exchange id, for CEX venues")
    stale_after_s: PositiveFloat = 10.0


class ListingConfig(Strict):
    """An instrument as one venue lists it."""

    venue_symbol: str
    tick_size: PositiveFloat | None = None
    lot_size: PositiveFloat | None = None
    min_size: PositiveFloat | None = None
    max_size: PositiveFloat | None = Field(None, description="largest order the venue takes, base units")
    min_notional: PositiveFloat | None = Field(None, description="smallest order the venue takes, quote units")
    contract_size: PositiveFloat = 1.0
    market_index: Annotated[int, Field(ge=0)] | None = None  # Drift
    base_mint: str | None = None  # Jupiter, Raydium
    quote_mint: str | None = None
    pool_id: str | None = None  # Raydium

    @model_validator(mode="after")
    def _sizes_ordered(self) -> ListingConfig:
        if self.min_size is not None and self.max_size is not None and self.min_size > self.max_size:
            raise ValueError(f"min_size ({self.min_size:g}) exceeds max_size ({self.max_size:g})")
        return self


class InstrumentConfig(Strict):
    symbol: str = Field(pattern=r"^[A-Z0-9]+-[A-Z0-9]+$")
    kind: MarketKind
    base: str
    quote: str
    listings: dict[str, ListingConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _symbol_matches_kind(self) -> InstrumentConfig:
        expected = f"{self.base}-PERP" if self.kind is MarketKind.PERP else f"{self.base}-{self.quote}"
        if self.symbol != expected:
            raise ValueError(f"symbol {self.symbol!r} should be {expected!r} for a {self.kind.value} market")
        return self


class VenuesConfig(Strict):
    venues: dict[str, VenueConfig] = Field(min_length=1)
    instruments: list[InstrumentConfig] = []

    @model_validator(mode="after")
    def _listings_name_known_venues(self) -> VenuesConfig:
        seen: set[str] = set()
        for i, inst in enumerate(self.instruments):
            if inst.symbol in seen:
                raise ValueError(f"instruments[{i}]: symbol {inst.symbol!r} is listed twice")
            seen.add(inst.symbol)
            for venue in inst.listings:
                if venue not in self.venues:
                    raise ValueError(
                        f"instruments[{i}].listings.{venue}: unknown venue {venue!r} "
                        f"(known: {', '.join(sorted(self.venues))})"
                    )
        return self


# --- strategies.yaml ----------------------------------------------------------------


class StrategyInstanceConfig(Strict):
    name: str = Field(pattern=r"^[a-z0-9_]+$")
    strategy: str = Field(description="registered strategy name, e.g. ema_cross")
    instruments: list[str] = Field(min_length=1, description="venue:SYMBOL keys")
    params: dict[str, float | int | str | bool] = {}
    enabled: bool = True


class StrategiesConfig(Strict):
    strategies: list[StrategyInstanceConfig] = []

    @model_validator(mode="after")
    def _unique_names(self) -> StrategiesConfig:
        names = [s.name for s in self.strategies]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"strategy names must be unique: {', '.join(dupes)}")
        return self


# --- risk.yaml ----------------------------------------------------------------------


class DynamicStopConfig(Strict):
    """Stop distance = ``multiple`` x rolling volatility of returns over ``window`` bars."""

    window: Annotated[int, Field(ge=2)] = 20
    multiple: PositiveFloat = 3.0


class RuleSwitches(Strict):
    """The pre-trade rules of the Risk Rules Monitor (``actors/risk/rules.py``), each on
    unless switched off here. A switch covers the pre-trade check only: the continuous
    checks (auto-close before liquidation, the trailing stop, the drawdown kill switch)
    follow the limits themselves, as the simulator does, and the simulator reads the
    limits, not these switches. The trading state, an unknown strategy or instrument and
    an order without any price are always refused."""

    stale_venue: bool = True
    reduce_only: bool = True
    spot_inventory: bool = True
    tick_size: bool = True
    lot_size: bool = True
    min_size: bool = True
    max_size: bool = True
    min_notional: bool = True
    price_band: bool = True
    max_open_orders: bool = True
    daily_loss_limit: bool = True
    max_drawdown: bool = True
    max_order_notional: bool = True
    max_position_notional: bool = True
    max_leverage: bool = True
    free_collateral: bool = True
    liquidation_buffer: bool = True
    net_exposure: bool = True
    gross_exposure: bool = True
    treasury: bool = True
    max_orders_per_s: bool = True


OnBreach = Literal["reducing", "halted"]
Drawdown = Annotated[float, Field(gt=0, lt=1)]


class RiskLimits(Strict):
    # Read by the simulator too (sim/settings.py RiskRules.from_limits), with this meaning.
    max_position_notional: PositiveFloat = 10_000.0
    max_order_notional: PositiveFloat = 2_500.0
    max_leverage: PositiveFloat = 5.0
    max_drawdown: Drawdown = 0.2
    liquidation_buffer: Drawdown = 0.1
    dynamic_stop: DynamicStopConfig | None = DynamicStopConfig()
    # The Risk Rules Monitor's own.
    max_open_orders: Annotated[int, Field(ge=1)] = Field(20, description="resting or working orders per strategy")
    price_band_bps: Annotated[float, Field(gt=0, le=10_000)] = Field(
        200.0, description="an order's price within this of the consolidated mid (else the mark)"
    )
    max_orders_per_s: Annotated[int, Field(ge=1)] = Field(10, description="accepted orders per strategy in any 1 s")
    daily_loss_limit: Drawdown | None = Field(
        0.05, description="fraction of the UTC day's starting equity; null switches it off"
    )
    on_breach: OnBreach = Field("halted", description="state on the daily loss limit or max_drawdown")
    checks: RuleSwitches = RuleSwitches()


class RiskOverrides(Strict):
    max_position_notional: PositiveFloat | None = None
    max_order_notional: PositiveFloat | None = None
    max_leverage: PositiveFloat | None = None
    max_drawdown: Drawdown | None = None
    liquidation_buffer: Drawdown | None = None
    dynamic_stop: DynamicStopConfig | None = None
    max_open_orders: Annotated[int, Field(ge=1)] | None = None
    price_band_bps: Annotated[float, Field(gt=0, le=10_000)] | None = None
    max_orders_per_s: Annotated[int, Field(ge=1)] | None = None
    daily_loss_limit: Drawdown | None = None
    on_breach: OnBreach | None = None
    checks: RuleSwitches = Field(RuleSwitches(), description="only the switches named here change")


class AssetExposureLimits(Strict):
    """Net (signed, long minus short) and gross notional of one asset, across every venue
    and every strategy: a perp short against a spot long of the same asset nets out."""

    max_net_notional: PositiveFloat | None = None
    max_gross_notional: PositiveFloat | None = None


class TreasuryAccountConfig(Strict):
    """The Botmain Treasury's account on one venue."""

    balance: Annotated[float, Field(ge=0)] = Field(description="quote units; the monitor is told of changes at run time")


Amount = Annotated[float, Field(ge=0)]


class RiskConfig(Strict):
    defaults: RiskLimits = RiskLimits()
    strategies: dict[str, RiskOverrides] = {}
    exposure: dict[str, AssetExposureLimits] = Field({}, description="per base asset (SOL, BTC)")
    treasury: dict[str, TreasuryAccountConfig] = Field({}, description="per venue")
    allocations: dict[str, dict[str, Amount]] = Field(
        {}, description="strategy -> venue -> what it may use of the treasury's account there"
    )
    disabled_venues: list[str] = Field([], description="venues no new order may go to")

    @model_validator(mode="after")
    def _allocations_within_treasury(self) -> RiskConfig:
        per_venue: dict[str, list[tuple[str, float]]] = {}
        for strategy, venues in self.allocations.items():
            for venue, amount in venues.items():
                if venue not in self.treasury:
                    raise ValueError(
                        f"allocations.{strategy}.{venue}: no treasury account on {venue} "
                        f"(add treasury.{venue}.balance)"
                    )
                per_venue.setdefault(venue, []).append((strategy, amount))
        for venue, parts in per_venue.items():
            total = sum(amount for _, amount in parts)
            balance = self.treasury[venue].balance
            if total > balance * (1 + 1e-12):
                shares = " + ".join(f"{s} {amount:,.2f}" for s, amount in parts)
                raise ValueError(
                    f"allocations on {venue} sum to {total:,.2f} ({shares}), "
                    f"past the treasury's balance there of {balance:,.2f} (treasury.{venue}.balance)"
                )
        return self

    def limits_for(self, strategy: str) -> RiskLimits:
        overrides = self.strategies.get(strategy)
        if overrides is None:
            return self.defaults
        # exclude_unset, not exclude_none: `dynamic_stop: null` switches the stop off.
        merged = {**self.defaults.model_dump(), **overrides.model_dump(exclude_unset=True)}
        if "checks" in overrides.model_fields_set:  # the switches it names, over the defaults' ones
            merged["checks"] = {**self.defaults.checks.model_dump(), **overrides.checks.model_dump(exclude_unset=True)}
        return RiskLimits.model_validate(merged)


# --- serve.yaml ---------------------------------------------------------------------


class RateLimitConfig(Strict):
    requests_per_s: PositiveFloat = 5.0
    burst: Annotated[int, Field(ge=1)] = 5


class JwtConfig(Strict):
    issuer: str = "botmain"
    audience: str = "botmain-api"
    ttl_s: Annotated[int, Field(ge=1, le=86_400)] = 900
    algorithm: Literal["HS256", "HS384", "HS512"] = "HS256"
    leeway_s: Annotated[int, Field(ge=0, le=300)] = Field(
        30, description="clock skew allowed between the node that issued a token and the one that checks it (exp, iat)"
    )


def _ip_network(value: str) -> str:
    """An address or a CIDR network, normalised (``10.0.0.1`` -> ``10.0.0.1/32``)."""
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address or network (e.g. 10.0.0.5 or 10.0.0.0/24)") from None


def _a_path(value: str) -> str:
    """A file's path, never its contents: a PEM block pasted into YAML would put a private
    key in the repository, which the loader's secret-key check exists to prevent."""
    if "-----BEGIN" in value or "\n" in value:
        raise ValueError("expected the path of a PEM file, not the PEM text itself (keep the key in a file outside the repository)")
    if not value.strip():
        raise ValueError("expected the path of a PEM file")
    return value


class TlsConfig(Strict):
    """HTTPS at Serve's own proxy (``HTTPOptions.ssl_certfile`` / ``ssl_keyfile``): paths to a
    PEM certificate (chain) and its private key, relative to the project root or absolute,
    on every node that runs a proxy. The key must not be password-protected: Serve would
    keep the password in its controller's state (the GCS), where secrets do not belong."""

    cert_file: Annotated[str, AfterValidator(_a_path)]
    key_file: Annotated[str, AfterValidator(_a_path)]


class BatchConfig(Strict):
    """``@serve.batch``: concurrent decide requests in a replica share one model call.

    ``wait_timeout_s`` 0: a batch is every request that queued while the previous batch
    ran, with no added wait; under load batches form by themselves. A wait above 0 holds
    the first request for company, and Serve's batching loop then costs CPU per arrival."""

    max_batch_size: Annotated[int, Field(ge=1, le=1024)] = 32
    wait_timeout_s: Annotated[float, Field(ge=0, le=1)] = 0.0


class ServeConfig(Strict):
    host: str = "127.0.0.1"
    port: Port = 8000
    tls: TlsConfig | None = None
    replicas: Annotated[int, Field(ge=1)] = 1
    rate_limit: RateLimitConfig = RateLimitConfig()
    trusted_proxies: list[Annotated[str, AfterValidator(_ip_network)]] = Field(
        default_factory=list,
        description="proxies whose X-Forwarded-For is believed; the rate limit keys on the address that results",
    )
    jwt: JwtConfig = JwtConfig()
    batch: BatchConfig = BatchConfig()
    model_poll_s: Annotated[float, Field(gt=0, le=3600)] = Field(2.0, description="how often each replica checks the active model version")
    auth_reload_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        5.0, description="how often each replica re-reads the JWT keys and API clients (their _FILE variants can change)"
    )


# --- simulation.yaml ----------------------------------------------------------------


SlippageModel = Literal["none", "amm", "book", "sqrt"]


class CostOverrides(Strict):
    """Execution-cost settings for one venue or one venue:SYMBOL; unset keys inherit."""

    slippage: SlippageModel | None = Field(
        None, description="size-dependent impact on top of slippage_bps: none, amm, book or sqrt"
    )
    slippage_bps: Annotated[float, Field(ge=0, le=1000)] | None = None
    pool_depth_usd: PositiveFloat | None = Field(None, description="amm: pool value (both sides) in quote")
    impact_coef: Annotated[float, Field(ge=0)] | None = Field(None, description="sqrt: Y in Y*sigma*sqrt(Q/V)")
    impact_window_bars: Annotated[int, Field(ge=2)] | None = None
    book_depth: Annotated[int, Field(ge=1, le=200)] | None = Field(None, description="book: levels per side")
    fee_side: Literal["taker", "maker"] | None = None
    margin_ratio_initial: Annotated[float, Field(gt=0, le=1)] | None = None
    margin_ratio_maintenance: Annotated[float, Field(gt=0, le=1)] | None = None
    liquidation_fee: Annotated[float, Field(ge=0, le=0.1)] | None = None


class CostDefaults(CostOverrides):
    """The base every override starts from: every key set."""

    slippage: SlippageModel = "sqrt"
    slippage_bps: Annotated[float, Field(ge=0, le=1000)] = 1.0
    pool_depth_usd: PositiveFloat = 10_000_000.0
    impact_coef: Annotated[float, Field(ge=0)] = 0.5
    impact_window_bars: Annotated[int, Field(ge=2)] = 1440
    book_depth: Annotated[int, Field(ge=1, le=200)] = 20
    fee_side: Literal["taker", "maker"] = "taker"
    margin_ratio_initial: Annotated[float, Field(gt=0, le=1)] = 0.1
    margin_ratio_maintenance: Annotated[float, Field(gt=0, le=1)] = 0.05
    liquidation_fee: Annotated[float, Field(ge=0, le=0.1)] = 0.01


class CostsConfig(Strict):
    defaults: CostDefaults = CostDefaults()
    venues: dict[str, CostOverrides] = {}
    instruments: dict[str, CostOverrides] = Field({}, description="keyed by venue:SYMBOL")

    def resolve(self, venue: str, key: str) -> CostDefaults:
        """Defaults, then the venue's overrides, then the instrument's."""
        merged = self.defaults.model_dump()
        for layer in (self.venues.get(venue), self.instruments.get(key)):
            if layer is not None:
                merged.update(layer.model_dump(exclude_none=True))
        return CostDefaults.model_validate(merged)


class SweepConfig(Strict):
    chunk_size: Annotated[int, Field(ge=1)] = 32
    store_best: Annotated[int, Field(ge=0)] = Field(10, description="runs whose trades and equity are stored")
    rank_by: Literal["sharpe", "total_return", "calmar", "sortino"] = "sharpe"
    max_retries: Annotated[int, Field(ge=0)] = 3


class SimulationConfig(Strict):
    initial_cash: PositiveFloat = 10_000.0
    fill_price: Literal["next_open", "close"] = "next_open"
    latency_ms: Annotated[float, Field(ge=0)] = 250.0
    timeframe: str = Field("1m", pattern=r"^\d+[smhdw]$", description="bar size read from the lake")
    costs: CostsConfig = CostsConfig()
    sweep: SweepConfig = SweepConfig()

    @model_validator(mode="after")
    def _latency_needs_next_open(self) -> SimulationConfig:
        if self.fill_price == "close" and self.latency_ms > 0:
            raise ValueError(
                "latency_ms applies only with fill_price: next_open "
                "(a fill at the signal bar's close has no time to be late); set latency_ms: 0"
            )
        return self


# --- market_data.yaml ---------------------------------------------------------------


class BackoffConfig(Strict):
    """Reconnect delays: ``initial_s``, doubling up to ``max_s``; reset after a session that
    delivered events. A 429 with Retry-After waits what the venue asked instead."""

    initial_s: PositiveFloat = 0.5
    max_s: PositiveFloat = 30.0

    @model_validator(mode="after")
    def _ordered(self) -> BackoffConfig:
        if self.initial_s > self.max_s:
            raise ValueError(f"initial_s ({self.initial_s}) exceeds max_s ({self.max_s})")
        return self


class FeedConfig(Strict):
    """What every feed actor shares: whether it runs, how it retries, how it batches."""

    enabled: bool = False
    backoff: BackoffConfig = BackoffConfig()
    request_timeout_s: PositiveFloat = 10.0
    flush_interval_ms: Annotated[float, Field(gt=0, le=1000)] = Field(
        5.0, description="at most one batch per interval to the MDS; an idle feed sends at once"
    )
    batch_max: Annotated[int, Field(ge=1)] = 5000
    max_inflight: Annotated[int, Field(ge=1, le=64)] = Field(2, description="unacknowledged batches to the MDS")
    max_unconfirmed_events: Annotated[int, Field(ge=0)] = Field(
        1_000_000,
        description="events kept until the MDS confirms they are stored, to re-send to a restarted MDS; "
        "beyond this the oldest are let go (counted)",
    )
    num_cpus: Annotated[float, Field(ge=0)] = 0.0


ReplayKind = Literal["quotes", "trades", "books", "funding", "bars"]


class ReplayFeedConfig(FeedConfig):
    """Recorded data from the lake, merged across series in event-time order."""

    enabled: bool = True
    speed: PositiveFloat | Literal["max"] = Field(
        "max", description="1 = real time, 60 = a minute per second, max = as fast as possible"
    )
    rate: PositiveFloat | None = Field(
        None, description="load testing: this many events/s, evenly spaced, whatever the recorded times (overrides speed)"
    )
    start: str | None = None
    end: str | None = None
    instruments: list[str] | None = Field(None, description="venue:SYMBOL keys; null = every series in the lake")
    kinds: list[ReplayKind] = ["quotes", "trades", "books", "funding", "bars"]
    timeframe: str = Field("1m", pattern=r"^\d+[smhdw]$", description="bars_<timeframe> series to replay")
    book_interval_ms: Annotated[float, Field(gt=0)] = 1000.0
    book_depth: Annotated[int, Field(ge=1, le=200)] = 20


class DriftFeedConfig(FeedConfig):
    """Drift perps: oracle, mark and funding from the chain (driftpy), the book from the DLOB server.
    The RPC endpoint comes from BOTMAIN_SOLANA_RPC_URL, else ``rpc_url``."""

    env: Literal["mainnet", "devnet"] = "mainnet"
    rpc_url: str = "https://api.mainnet-beta.solana.com"
    dlob_url: str = "https://dlob.drift.trade"
    markets: list[str] = Field(["SOL-PERP"], min_length=1, description="Botmain symbols listed on drift")
    poll_interval_s: PositiveFloat = 1.0
    book_depth: Annotated[int, Field(ge=1, le=100)] = 20


class JupiterFeedConfig(FeedConfig):
    """Jupiter swap quotes for configured sizes (base units) in both directions.
    An API key, if any, comes from BOTMAIN_JUPITER_API_KEY."""

    base_url: str = "https://api.jup.ag/swap/v1"
    instruments: list[str] = Field(["SOL-USDC"], min_length=1, description="spot symbols listed on jupiter")
    sizes: list[PositiveFloat] = Field([1.0, 10.0, 100.0], min_length=1)
    slippage_bps: Annotated[int, Field(ge=0, le=10_000)] = 50
    poll_interval_s: PositiveFloat = 2.0


class RaydiumFeedConfig(FeedConfig):
    """Raydium API v3: mint prices and pool state for the configured pools."""

    api_url: str = "https://api-v3.raydium.io"
    instruments: list[str] = Field(["SOL-USDC"], min_length=1, description="spot symbols listed on raydium")
    poll_interval_s: PositiveFloat = 5.0


class CexFeedConfig(FeedConfig):
    """Centralised exchanges through ccxt: books, trades and (for perps) funding."""

    venues: list[str] = Field(["binance", "binanceusdm"], min_length=1, description="cex venues in venues.yaml")
    instruments: list[str] | None = Field(None, description="symbols; null = every listing on those venues")
    book_depth: Annotated[int, Field(ge=1, le=1000)] = 20
    poll_interval_s: PositiveFloat = 1.0
    funding_interval_s: PositiveFloat = 60.0


class SolanaFeedConfig(FeedConfig):
    """Solana chain data: slots, program logs, recent prioritisation fees.
    The RPC endpoint comes from BOTMAIN_SOLANA_RPC_URL, else ``rpc_url``; the websocket
    endpoint is ``ws_url``, or derived from the RPC URL (https->wss, port+1 if explicit)."""

    rpc_url: str = "https://api.mainnet-beta.solana.com"
    ws_url: str | None = None
    commitment: Literal["processed", "confirmed", "finalized"] = "confirmed"
    programs: dict[str, str] = {
        "drift": "dRiftyHA39MWEi3m9aunc5MzRF1JYuBsbn6VPcn33UH",
        "jupiter": "JUP6LkbZbjS1jKKwapdHNy74zcZ3tLUZoi5QNyVTaV4",
        "raydium_amm_v4": "675kPX9MHTjS2zt1qfr1NYHuzeLXfQM9H24wFSUt1Mp8",
    }
    priority_fee_interval_s: PositiveFloat = 10.0
    priority_fee_accounts: list[str] = Field([], description="writable accounts whose fees to sample (max 128)")


class NewsSourceConfig(Strict):
    name: str = Field(pattern=r"^[a-z0-9_]+$")
    url: str
    format: Literal["rss", "atom", "json"] = "rss"


class NewsFeedConfig(FeedConfig):
    sources: list[NewsSourceConfig] = []
    poll_interval_s: PositiveFloat = 60.0
    keywords: dict[str, list[str]] = Field(
        {}, description="symbol -> extra words that tag a headline with it (the base asset always does)"
    )


class FeedsConfig(Strict):
    replay: ReplayFeedConfig = ReplayFeedConfig()
    drift: DriftFeedConfig = DriftFeedConfig()
    jupiter: JupiterFeedConfig = JupiterFeedConfig()
    raydium: RaydiumFeedConfig = RaydiumFeedConfig()
    cex: CexFeedConfig = CexFeedConfig()
    solana: SolanaFeedConfig = SolanaFeedConfig()
    news: NewsFeedConfig = NewsFeedConfig()


PersistedTable = Literal[
    "quotes", "book_snapshots", "market_trades", "funding_rates", "bars", "mark_prices", "swap_quotes", "pool_states",
    "chain_events", "news_items", "strategy_signals",
]
RecordedTable = Literal[
    "quotes", "book_snapshots", "market_trades", "funding_rates", "bars", "mark_prices", "swap_quotes", "pool_states"
]


class PersistConfig(Strict):
    """Writing what the MDS sees to PostgreSQL, off the hot path, with batched COPY."""

    enabled: bool = True
    tables: list[PersistedTable] = list(PersistedTable.__args__)  # type: ignore[attr-defined]
    flush_interval_s: PositiveFloat = 1.0
    batch_rows: Annotated[int, Field(ge=1)] = 50_000
    max_pending_rows: Annotated[int, Field(ge=1)] = 2_000_000
    book_interval_ms: Annotated[float, Field(ge=0)] = Field(
        1000.0, description="store at most one book snapshot per instrument per interval (0 = all)"
    )
    retry_deadline_s: PositiveFloat = Field(10.0, description="one write's reconnect budget before it is re-queued")


class RecordConfig(Strict):
    """Recording what the MDS receives into the Parquet lake (the ingest's partitioning),
    so that a live or paper session can be backtested afterwards like ingested history."""

    enabled: bool = True
    tables: list[RecordedTable] = list(RecordedTable.__args__)  # type: ignore[attr-defined]
    lake_root: str | None = Field(None, description="where to record; null = the store's lake (store.yaml)")
    replay: bool = Field(
        False, description="also record the replay feed's events (they came from a lake: only into another lake_root)"
    )
    flush_interval_s: PositiveFloat = Field(5.0, description="recorded rows are appended to the lake this often...")
    batch_rows: Annotated[int, Field(ge=1)] = Field(200_000, description="...or as soon as this many wait")
    compact_segments: Annotated[int, Field(ge=1)] = Field(
        16, description="a partition's appended segments are folded into its part-0 file once it has this many"
    )


class StreamConfig(Strict):
    """The market-data links between actors (ZeroMQ with CURVE, actors/stream/)."""

    max_frame_bytes: Annotated[int, Field(ge=1024)] = Field(
        64 * 1024 * 1024, description="a bigger batch is refused (counted); 4x this drops the connection unread"
    )
    handshake_timeout_s: PositiveFloat = Field(5.0, description="a peer that has not finished the CURVE handshake by then is dropped")
    heartbeat_s: PositiveFloat = 1.0
    heartbeat_timeout_s: PositiveFloat = 10.0
    connect_timeout_s: PositiveFloat = 10.0


class SupervisionConfig(Strict):
    """How Ray restarts the long-lived actors (MDS, its store writer, the feeds) when their
    process dies: each comes back, rebuilds its state and resumes (docs/market_data.md)."""

    max_restarts: Annotated[int, Field(ge=-1)] = Field(-1, description="restarts per actor; -1 = without limit")
    max_task_retries: Annotated[int, Field(ge=-1)] = Field(
        -1, description="retries of an idempotent call (status, subscribe...) across a restart; -1 = until it succeeds"
    )


class MdsConfig(Strict):
    clock: Literal["auto", "wall", "event"] = Field(
        "auto", description="staleness clock; auto = event time while replay is the only feed, else wall time"
    )
    fanout_interval_ms: Annotated[float, Field(gt=0, le=1000)] = Field(
        1.0, description="at most one batch per interval to each subscriber; an idle stream sends at once"
    )
    fanout_batch_max: Annotated[int, Field(ge=1)] = 5000
    subscriber_max_pending: Annotated[int, Field(ge=1)] = 200_000
    stale_check_interval_s: PositiveFloat = 0.5
    bar_interval_s: Annotated[int, Field(ge=1)] = 60
    num_cpus: Annotated[float, Field(ge=0)] = 0.0
    persist: PersistConfig = PersistConfig()
    record: RecordConfig = RecordConfig()


class MarketDataConfig(Strict):
    mds: MdsConfig = MdsConfig()
    feeds: FeedsConfig = FeedsConfig()
    stream: StreamConfig = StreamConfig()
    supervision: SupervisionConfig = SupervisionConfig()
