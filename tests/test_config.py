"""Configuration: the shipped files load; bad files fail at load naming the file, the key
path and what was expected; secrets come only from BOTMAIN_* variables and never show."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest
import yaml

from cluster.config import BotmainConfig, ConfigError, load_config, mask_dsn, read_secret
from cluster.config.loader import DEFAULT_CONFIG_DIR
from cluster.config.models import DynamicStopConfig, RiskConfig
from cluster.config.secrets import SecretError
from cluster.domain import MarketKind, VenueKind
from sim.settings import RiskRules

from tests.conftest import ROOT, write_config_dir

SECRET = "hunter2-s3cr3t"


@pytest.fixture(autouse=True)
def no_botmain_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see no BOTMAIN_* variables unless they set them."""
    import os

    for name in list(os.environ):
        if name.startswith("BOTMAIN_"):
            monkeypatch.delenv(name)


def edit(directory: Path, name: str, change: Callable[[dict], None]) -> None:
    path = directory / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))


def load_error(directory: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(directory)
    return str(info.value)


@pytest.fixture
def configs(tmp_path: Path) -> Path:
    return write_config_dir(tmp_path / "configs")


def drift_sol(venues: dict) -> dict:
    """The drift listing of SOL-PERP (instruments[0]) in venues.yaml."""
    assert venues["instruments"][0]["symbol"] == "SOL-PERP"
    return venues["instruments"][0]["listings"]["drift"]


# --- the shipped configuration ---------------------------------------------------------


def test_shipped_configs_load_from_default_dir():
    config = load_config()
    assert isinstance(config, BotmainConfig)
    assert config.root == ROOT
    assert {s.name for s in config.strategies.strategies} == {"sol_ema_cross", "sol_funding_carry"}
    assert config.serve.port == 8000
    assert config.store.postgres.embedded.port == 54329
    assert config.lake_root == ROOT / "var" / "lake"
    assert config.pg_dsn is None


def test_config_dir_comes_from_botmain_config_dir(configs: Path, monkeypatch: pytest.MonkeyPatch):
    edit(configs, "serve", lambda d: d.update(port=8123))
    monkeypatch.setenv("BOTMAIN_CONFIG_DIR", str(configs))
    config = load_config()
    assert config.serve.port == 8123
    assert config.root == configs.parent


def test_copied_configs_load(configs: Path):
    assert load_config(configs).venues.venues["drift"].kind is VenueKind.PERP_DEX


def test_instrument_lookup_returns_domain_instrument_with_configured_sizes():
    inst = load_config(DEFAULT_CONFIG_DIR).instrument("drift:SOL-PERP")
    assert inst.key == "drift:SOL-PERP"
    assert inst.kind is MarketKind.PERP
    assert (inst.base, inst.quote, inst.venue_symbol) == ("SOL", "USD", "SOL-PERP")
    assert inst.tick_size == 0.0001
    assert inst.lot_size == 0.01
    assert inst.min_size == 0.01
    assert load_config(DEFAULT_CONFIG_DIR).instrument("binanceusdm:SOL-PERP").venue_symbol == "SOLUSDT"


def test_unknown_instrument_and_venue_lookups_raise_key_error():
    config = load_config(DEFAULT_CONFIG_DIR)
    with pytest.raises(KeyError, match="not listed"):
        config.instrument("drift:ETH-PERP")
    with pytest.raises(KeyError, match="unknown venue"):
        config.venue("kraken")
    drift = config.venue("drift")
    assert (drift.kind, drift.maker_fee, drift.taker_fee) == (VenueKind.PERP_DEX, -0.000025, 0.00035)


# --- bad files --------------------------------------------------------------------------


def test_typo_key_names_file_path_and_suggests_the_right_key(configs: Path):
    edit(configs, "venues", lambda v: drift_sol(v).update(tick_sise=drift_sol(v).pop("tick_size")))
    msg = load_error(configs)
    assert "venues.yaml: instruments[0].listings.drift.tick_sise: unknown key" in msg
    assert "did you mean 'tick_size'" in msg


def test_typo_in_nested_cluster_key_suggests_port(configs: Path):
    edit(configs, "cluster", lambda c: c["head"].update(prot=1234))
    msg = load_error(configs)
    assert "cluster.yaml: head.prot: unknown key" in msg
    assert "did you mean 'port'" in msg


def test_non_numeric_tick_size_says_a_number_was_expected(configs: Path):
    edit(configs, "venues", lambda v: drift_sol(v).update(tick_size="abc"))
    msg = load_error(configs)
    assert "venues.yaml: instruments[0].listings.drift.tick_size: expected a valid number" in msg
    assert "'abc'" in msg


def test_non_integer_port_says_an_integer_was_expected(configs: Path):
    edit(configs, "serve", lambda s: s.update(port="eighty"))
    msg = load_error(configs)
    assert "serve.yaml: port: expected a valid integer" in msg
    assert "'eighty'" in msg


def test_out_of_range_port_is_refused(configs: Path):
    edit(configs, "serve", lambda s: s.update(port=70000))
    assert "serve.yaml: port:" in load_error(configs)


def test_negative_tick_size_is_refused(configs: Path):
    edit(configs, "venues", lambda v: drift_sol(v).update(tick_size=-0.01))
    msg = load_error(configs)
    assert "instruments[0].listings.drift.tick_size: expected greater than 0" in msg


def test_missing_required_kind(configs: Path):
    edit(configs, "venues", lambda v: v["instruments"][0].pop("kind"))
    assert "venues.yaml: instruments[0].kind: required key is missing" in load_error(configs)


def test_unknown_venue_in_listings(configs: Path):
    edit(configs, "venues", lambda v: v["instruments"][0]["listings"].update(kraken={"venue_symbol": "SOLUSD"}))
    msg = load_error(configs)
    assert "venues.yaml: instruments[0].listings.kraken: unknown venue 'kraken'" in msg
    assert "drift" in msg  # lists the known venues


def test_strategy_with_unknown_venue(configs: Path):
    edit(configs, "strategies", lambda s: s["strategies"][1].update(instruments=["drift:SOL-PERP", "kraken:SOL-PERP"]))
    msg = load_error(configs)
    assert "strategies.yaml: strategies[1].instruments[1]: 'kraken:SOL-PERP': unknown venue 'kraken'" in msg


def test_strategy_with_instrument_not_listed_on_venue(configs: Path):
    # jupiter is a known venue, but SOL-PERP is not listed there
    edit(configs, "strategies", lambda s: s["strategies"][0].update(instruments=["jupiter:SOL-PERP"]))
    msg = load_error(configs)
    assert "strategies.yaml: strategies[0].instruments[0]: 'jupiter:SOL-PERP': not listed in venues.yaml" in msg


def test_risk_override_for_missing_strategy(configs: Path):
    edit(configs, "risk", lambda r: r["strategies"].update(ghost={"max_leverage": 2}))
    assert "risk.yaml: strategies.ghost: no strategy named 'ghost'" in load_error(configs)


def test_symbol_that_does_not_match_kind(configs: Path):
    edit(configs, "venues", lambda v: v["instruments"][0].update(kind="spot"))
    msg = load_error(configs)
    assert "venues.yaml: instruments[0]: symbol 'SOL-PERP' should be 'SOL-USD' for a spot market" in msg


def test_symbol_that_does_not_match_base(configs: Path):
    edit(configs, "venues", lambda v: v["instruments"][0].update(base="ETH"))
    assert "instruments[0]: symbol 'SOL-PERP' should be 'ETH-PERP'" in load_error(configs)


def test_spot_symbol_that_does_not_match_quote(configs: Path):
    edit(configs, "venues", lambda v: v["instruments"][2].update(quote="USDT"))  # SOL-USDC
    assert "instruments[2]: symbol 'SOL-USDC' should be 'SOL-USDT' for a spot market" in load_error(configs)


def test_duplicate_strategy_names(configs: Path):
    edit(configs, "strategies", lambda s: s["strategies"][1].update(name="sol_ema_cross"))
    assert "strategies.yaml: strategy names must be unique: sol_ema_cross" in load_error(configs)


def test_pool_min_size_above_max_size(configs: Path):
    edit(configs, "store", lambda s: s["postgres"]["pool"].update(min_size=9))
    assert "store.yaml: postgres.pool: min_size (9) exceeds max_size (8)" in load_error(configs)


def test_invalid_yaml_names_line(configs: Path):
    (configs / "serve.yaml").write_text("host: 127.0.0.1\nport: [8000\nreplicas: 1\n")
    msg = load_error(configs)
    assert "serve.yaml:" in msg
    assert "not valid YAML" in msg
    assert "line 3" in msg


def test_yaml_that_is_not_a_mapping(configs: Path):
    (configs / "serve.yaml").write_text("- host\n- port\n")
    assert "serve.yaml: expected a mapping" in load_error(configs)


def test_missing_file(configs: Path):
    (configs / "risk.yaml").unlink()
    msg = load_error(configs)
    assert "risk.yaml: file not found" in msg


def test_missing_directory(tmp_path: Path):
    assert "configuration directory not found" in load_error(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("name", "change", "where"),
    [
        ("venues", lambda v: v["venues"]["drift"].update(api_key="abc"), "venues.yaml: venues.drift.api_key"),
        ("store", lambda s: s["postgres"]["embedded"].update(password="abc"), "store.yaml: postgres.embedded.password"),
        ("serve", lambda s: s["jwt"].update(secret="abc"), "serve.yaml: jwt.secret"),
        ("store", lambda s: s["postgres"].update(dsn="postgresql://u:p@h/db"), "store.yaml: postgres.dsn"),
        ("venues", lambda v: drift_sol(v).update(private_key="abc"), "venues.yaml: instruments[0].listings.drift.private_key"),
    ],
)
def test_secret_looking_key_is_refused_with_env_var_hint(configs: Path, name, change, where):
    edit(configs, name, change)
    msg = load_error(configs)
    assert f"{where}: looks like a secret" in msg
    assert "BOTMAIN_" in msg
    assert "environment variable" in msg
    assert "abc" not in msg and "u:p@" not in msg  # the value itself is not echoed


def test_a_key_naming_the_file_that_holds_a_secret_is_not_one(configs: Path):
    edit(configs, "store", lambda s: s["postgres"]["embedded"].update(password_file="/srv/botmain/pg.password"))
    config = load_config(configs)
    assert config.store.postgres.embedded.password_file == "/srv/botmain/pg.password"
    assert load_config(DEFAULT_CONFIG_DIR).store.postgres.embedded.password_file == "var/pg.password"


# --- risk -------------------------------------------------------------------------------


def test_limits_for_applies_overrides_and_keeps_other_defaults():
    risk = load_config(DEFAULT_CONFIG_DIR).risk
    limits = risk.limits_for("sol_ema_cross")
    assert limits.max_position_notional == 5000
    assert limits.max_order_notional == risk.defaults.max_order_notional == 2500
    assert risk.defaults.max_position_notional == 10000  # defaults untouched


def test_limits_for_strategy_without_overrides_is_defaults():
    risk = load_config(DEFAULT_CONFIG_DIR).risk
    assert risk.limits_for("a_strategy_without_overrides") == risk.defaults


def test_the_shipped_carry_strategy_has_no_per_leg_stop():
    risk = load_config(DEFAULT_CONFIG_DIR).risk
    assert risk.limits_for("sol_funding_carry").dynamic_stop is None
    assert risk.limits_for("sol_funding_carry").max_drawdown == risk.defaults.max_drawdown


def test_limits_for_dynamic_stop_override_is_a_model():
    risk = RiskConfig.model_validate({"strategies": {"s": {"dynamic_stop": {"window": 5}}}})
    stop = risk.limits_for("s").dynamic_stop
    assert isinstance(stop, DynamicStopConfig)
    assert (stop.window, stop.multiple) == (5, 3.0)


def test_limits_for_can_switch_the_dynamic_stop_off():
    risk = RiskConfig.model_validate({"strategies": {"s": {"dynamic_stop": None}}})
    assert risk.limits_for("s").dynamic_stop is None
    assert risk.defaults.dynamic_stop is not None


# --- risk: the Risk Rules Monitor's keys ------------------------------------------------


def test_shipped_risk_keys_and_defaults():
    config = load_config(DEFAULT_CONFIG_DIR)
    risk = config.risk
    limits = risk.defaults
    assert (limits.max_open_orders, limits.price_band_bps, limits.max_orders_per_s) == (20, 200, 10)
    assert (limits.daily_loss_limit, limits.on_breach) == (0.05, "halted")
    assert all(limits.checks.model_dump().values())
    assert risk.exposure["SOL"].max_net_notional == 15000 and risk.exposure["BTC"].max_gross_notional is None
    assert risk.treasury["drift"].balance == 20000
    assert risk.allocations["sol_funding_carry"] == {"drift": 5000, "jupiter": 5000}
    listing = config.venues.instruments[0].listings["binanceusdm"]
    assert listing.min_notional == 5 and listing.max_size is None
    assert config.instrument("binanceusdm:SOL-PERP").min_notional == 5


def test_simulator_limits_keep_their_meaning():
    rules = RiskRules.from_limits(load_config(DEFAULT_CONFIG_DIR).risk.limits_for("sol_ema_cross"))
    assert rules == RiskRules(
        max_position_notional=5000, max_order_notional=2500, max_leverage=5, stop_window=20,
        stop_multiple=3.0, liquidation_buffer=0.1, max_drawdown=0.2,
    )


def test_an_override_switches_only_the_rules_it_names():
    risk = RiskConfig.model_validate(
        {"defaults": {"checks": {"price_band": False}}, "strategies": {"s": {"checks": {"treasury": False}}, "t": {"max_leverage": 2}}}
    )
    s = risk.limits_for("s").checks
    assert not s.price_band and not s.treasury and s.max_leverage  # the defaults' switch stays off
    t = risk.limits_for("t")
    assert not t.checks.price_band and t.checks.treasury and t.max_leverage == 2


def test_unknown_rule_switch_is_refused_with_a_hint(configs: Path):
    edit(configs, "risk", lambda r: r["defaults"].update(checks={"price_bnad": False}))
    msg = load_error(configs)
    assert "risk.yaml: defaults.checks.price_bnad: unknown key (did you mean 'price_band'?)" in msg


def test_unknown_limit_is_refused(configs: Path):
    edit(configs, "risk", lambda r: r["strategies"]["sol_ema_cross"].update(max_open_order=3))
    assert "risk.yaml: strategies.sol_ema_cross.max_open_order: unknown key (did you mean 'max_open_orders'?)" in load_error(configs)


def test_on_breach_names_its_choices(configs: Path):
    edit(configs, "risk", lambda r: r["defaults"].update(on_breach="flatten"))
    msg = load_error(configs)
    assert "risk.yaml: defaults.on_breach: expected 'reducing' or 'halted', got 'flatten'" in msg


def test_daily_loss_limit_is_a_fraction(configs: Path):
    edit(configs, "risk", lambda r: r["defaults"].update(daily_loss_limit=500))
    assert "risk.yaml: defaults.daily_loss_limit: expected less than 1, got 500" in load_error(configs)


def test_allocations_past_the_treasury_balance_name_the_venue_and_numbers(configs: Path):
    edit(configs, "risk", lambda r: r["allocations"]["sol_ema_cross"].update(drift=16000))
    msg = load_error(configs)
    assert (
        "risk.yaml: allocations on drift sum to 21,000.00 (sol_ema_cross 16,000.00 + sol_funding_carry 5,000.00), "
        "past the treasury's balance there of 20,000.00 (treasury.drift.balance)"
    ) in msg


def test_allocation_on_a_venue_without_a_treasury_account(configs: Path):
    edit(configs, "risk", lambda r: r["allocations"]["sol_ema_cross"].update(hyperliquid=100))
    msg = load_error(configs)
    assert "allocations.sol_ema_cross.hyperliquid: no treasury account on hyperliquid (add treasury.hyperliquid.balance)" in msg


def test_allocation_for_an_unknown_strategy(configs: Path):
    edit(configs, "risk", lambda r: r["allocations"].update(ghost={"drift": 1}))
    assert "risk.yaml: allocations.ghost: no strategy named 'ghost' in strategies.yaml" in load_error(configs)


def test_treasury_on_an_unknown_venue(configs: Path):
    edit(configs, "risk", lambda r: r["treasury"].update(ftx={"balance": 1}))
    assert "risk.yaml: treasury.ftx: unknown venue 'ftx'" in load_error(configs)


def test_negative_treasury_balance(configs: Path):
    edit(configs, "risk", lambda r: r["treasury"]["drift"].update(balance=-5))
    assert "risk.yaml: treasury.drift.balance: expected greater than or equal to 0, got -5" in load_error(configs)


def test_disabled_venue_must_exist(configs: Path):
    edit(configs, "risk", lambda r: r.update(disabled_venues=["drift", "kraken"]))
    assert "risk.yaml: disabled_venues[1]: unknown venue 'kraken'" in load_error(configs)


def test_exposure_for_an_asset_nothing_trades(configs: Path):
    edit(configs, "risk", lambda r: r["exposure"].update(ETH={"max_net_notional": 1}))
    assert "risk.yaml: exposure.ETH: no instrument in venues.yaml has base 'ETH'" in load_error(configs)


def test_exposure_limit_unknown_key(configs: Path):
    edit(configs, "risk", lambda r: r["exposure"]["SOL"].update(max_net=1))
    assert "risk.yaml: exposure.SOL.max_net: unknown key (did you mean 'max_net_notional'?)" in load_error(configs)


def test_listing_min_size_above_max_size(configs: Path):
    def change(v: dict) -> None:
        v["instruments"][0]["listings"]["drift"].update(max_size=0.001)

    edit(configs, "venues", change)
    assert "venues.yaml: instruments[0].listings.drift: min_size (0.01) exceeds max_size (0.001)" in load_error(configs)


# --- secrets ----------------------------------------------------------------------------


def test_read_secret_from_env(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BOTMAIN_PG_DSN", f"postgresql://u:{SECRET}@db/botmain")
    value = read_secret("PG_DSN")
    assert value.get_secret_value() == f"postgresql://u:{SECRET}@db/botmain"
    assert SECRET not in repr(value)
    assert SECRET not in str(value)
    assert SECRET not in f"{value}"


def test_read_secret_from_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "dsn"
    path.write_text(f"postgresql://u:{SECRET}@db/botmain\n")
    monkeypatch.setenv("BOTMAIN_PG_DSN_FILE", str(path))
    value = read_secret("PG_DSN")
    assert value.get_secret_value() == f"postgresql://u:{SECRET}@db/botmain"  # stripped
    assert SECRET not in repr(value) and SECRET not in str(value)


def test_env_value_wins_over_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "dsn"
    path.write_text("from-file")
    monkeypatch.setenv("BOTMAIN_PG_DSN_FILE", str(path))
    monkeypatch.setenv("BOTMAIN_PG_DSN", "from-env")
    assert read_secret("PG_DSN").get_secret_value() == "from-env"


def test_unset_secret_is_none():
    assert read_secret("PG_DSN") is None


def test_unreadable_secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("BOTMAIN_PG_DSN_FILE", str(tmp_path / "missing"))
    with pytest.raises(SecretError, match="BOTMAIN_PG_DSN_FILE.*cannot be read"):
        read_secret("PG_DSN")


def test_empty_secret_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "dsn"
    path.write_text("  \n")
    monkeypatch.setenv("BOTMAIN_PG_DSN_FILE", str(path))
    with pytest.raises(SecretError, match="BOTMAIN_PG_DSN_FILE.*empty"):
        read_secret("PG_DSN")


def test_read_secret_with_explicit_environ():
    assert read_secret("JWT_SECRET", environ={"BOTMAIN_JWT_SECRET": "k"}).get_secret_value() == "k"
    assert read_secret("JWT_SECRET", environ={}) is None


def test_config_pg_dsn_is_masked(monkeypatch: pytest.MonkeyPatch):
    config = load_config(DEFAULT_CONFIG_DIR)
    monkeypatch.setenv("BOTMAIN_PG_DSN", f"postgresql://u:{SECRET}@db/botmain")
    dsn = config.pg_dsn
    assert dsn.get_secret_value() == f"postgresql://u:{SECRET}@db/botmain"
    assert SECRET not in repr(dsn) and SECRET not in str(dsn)


def test_mask_dsn_hides_password():
    masked = mask_dsn(f"postgresql://botmain:{SECRET}@db.internal:5433/botmain?sslmode=require")
    assert masked == "postgresql://botmain:***@db.internal:5433/botmain?sslmode=require"


@pytest.mark.parametrize(
    "dsn",
    ["postgresql://postgres@127.0.0.1:54329/botmain", "postgresql://db.internal/botmain", "postgresql:///botmain"],
)
def test_mask_dsn_leaves_passwordless_dsn_unchanged(dsn):
    assert mask_dsn(dsn) == dsn


def test_mask_dsn_hides_password_in_query_string():
    assert SECRET not in mask_dsn(f"postgresql://botmain@db/botmain?password={SECRET}")


# --- simulation.yaml ----------------------------------------------------------------------


def test_simulation_costs_layer_defaults_then_venue_then_instrument(configs: Path):
    edit(configs, "simulation", lambda s: s["costs"].update(instruments={"drift:SOL-PERP": {"slippage_bps": 3.5}}))
    costs = load_config(configs).simulation.costs
    sol = costs.resolve("drift", "drift:SOL-PERP")
    assert (sol.slippage_bps, sol.margin_ratio_maintenance, sol.slippage) == (3.5, 0.03, "sqrt")  # instrument, venue, default
    assert costs.resolve("drift", "drift:BTC-PERP").slippage_bps == 1.0
    jup = costs.resolve("jupiter", "jupiter:SOL-USDC")
    assert (jup.slippage, jup.pool_depth_usd) == ("amm", 20_000_000)


def test_latency_with_fill_at_close_is_refused_with_the_reason(configs: Path):
    edit(configs, "simulation", lambda s: s.update(fill_price="close", latency_ms=100))
    msg = load_error(configs)
    assert "simulation.yaml" in msg and "latency_ms applies only with fill_price: next_open" in msg


def test_simulation_costs_name_only_known_venues_and_instruments(configs: Path):
    edit(configs, "simulation", lambda s: s["costs"]["venues"].update(kraken={"slippage_bps": 2}))
    assert "simulation.yaml: costs.venues.kraken: unknown venue 'kraken'" in load_error(configs)
    edit(configs, "simulation", lambda s: (s["costs"]["venues"].pop("kraken"), s["costs"].update(instruments={"drift:ETH-PERP": {}})))
    assert "simulation.yaml: costs.instruments.drift:ETH-PERP: 'drift:ETH-PERP' is not listed in venues.yaml" in load_error(configs)


def test_unknown_impact_model_lists_the_choices(configs: Path):
    edit(configs, "simulation", lambda s: s["costs"]["venues"]["raydium"].update(slippage="magic"))
    msg = load_error(configs)
    assert "simulation.yaml: costs.venues.raydium.slippage" in msg and "'amm'" in msg
