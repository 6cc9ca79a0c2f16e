"""Load and validate ``configs/*.yaml`` into one ``BotmainConfig``.

A bad file fails here, at load, with a message naming the file, the key path and what
was expected, for example::

    configs/venues.yaml: instruments[0].listings.drift.tick_sise: unknown key
    (did you mean 'tick_size'?)
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from cluster.config.models import (
    ClusterConfig,
    MarketDataConfig,
    RiskConfig,
    ServeConfig,
    SimulationConfig,
    StoreConfig,
    StrategiesConfig,
    VenuesConfig,
)
from cluster.config.secrets import SECRET_KEY_PATTERN, read_secret
from cluster.domain import Instrument, Venue

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG_DIR = PROJECT_ROOT / "configs"

M = TypeVar("M", bound=BaseModel)

FILES: dict[str, type[BaseModel]] = {
    "cluster": ClusterConfig,
    "store": StoreConfig,
    "venues": VenuesConfig,
    "strategies": StrategiesConfig,
    "risk": RiskConfig,
    "serve": ServeConfig,
    "simulation": SimulationConfig,
    "market_data": MarketDataConfig,
}


class ConfigError(ValueError):
    """A configuration file is missing, unparseable or invalid. The message says where."""


CONFIG_DIR_VAR = "BOTMAIN_CONFIG_DIR"


def config_dir() -> Path:
    """``$BOTMAIN_CONFIG_DIR`` (a relative one against the working directory), else the
    repository's ``configs/``."""
    return Path(os.environ.get(CONFIG_DIR_VAR, DEFAULT_CONFIG_DIR)).resolve()


def load_file(path: Path, model: type[M]) -> M:
    """Parse one YAML file into ``model``; every failure names the file and key."""
    shown = _display(path)
    if not path.exists():
        raise ConfigError(f"{shown}: file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{shown}:{where}: not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{shown}: expected a mapping of keys at the top level, got {type(data).__name__}")
    _refuse_secrets(data, shown, ())
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("\n".join(_describe(err, model, shown) for err in exc.errors())) from None


def _refuse_secrets(node: Any, shown: str, loc: tuple) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            # A key ending in _file (postgres.embedded.password_file) names where a secret
            # is kept, not the secret.
            if isinstance(key, str) and SECRET_KEY_PATTERN.search(key) and not key.endswith("_file"):
                raise ConfigError(
                    f"{shown}: {_path(loc + (key,))}: looks like a secret; secrets never go in YAML. "
                    "Set a BOTMAIN_* environment variable (or BOTMAIN_*_FILE pointing outside the repo)."
                )
            _refuse_secrets(value, shown, loc + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            _refuse_secrets(value, shown, loc + (i,))


def _describe(err: dict[str, Any], model: type[BaseModel], shown: str) -> str:
    loc = tuple(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_keys(model, loc[:-1])
        hint = ""
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        if close:
            hint = f" (did you mean {close[0]!r}?)"
        elif allowed:
            hint = f" (allowed: {', '.join(allowed)})"
        return f"{shown}: {_path(loc)}: unknown key{hint}"
    if kind == "missing":
        return f"{shown}: {_path(loc)}: required key is missing"
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "value_error" or not loc:
        # Model-level checks name their own path in the message.
        return f"{shown}: {_path(loc) + ': ' if loc else ''}{msg}"
    return f"{shown}: {_path(loc)}: {_expected(msg)}, got {err.get('input')!r}"


def _expected(msg: str) -> str:
    """Pydantic's "Input should be a valid integer" reads better as "expected a valid integer"."""
    prefix = "Input should be "
    return "expected " + msg[len(prefix):] if msg.startswith(prefix) else msg


def _path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<top level>"


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the model found at ``loc`` (walking lists, dicts and optionals)."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(str(part))
            if field is None:
                return []
            tp = field.annotation
        else:
            args = typing.get_args(tp)
            if not args:
                return []
            tp = args[-1]  # list[X] -> X, dict[K, X] -> X
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return sorted(tp.model_fields)
    return []


def _unwrap(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return tp


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class BotmainConfig:
    """Everything ``configs/`` says, plus the secrets from the environment."""

    root: Path  # the configuration directory's parent: relative paths in the files resolve against it
    directory: Path  # where the files were read: jobs submitted with this configuration read them too
    cluster: ClusterConfig
    store: StoreConfig
    venues: VenuesConfig
    strategies: StrategiesConfig
    risk: RiskConfig
    serve: ServeConfig
    simulation: SimulationConfig
    market_data: MarketDataConfig

    def path(self, relative: str) -> Path:
        p = Path(relative).expanduser()
        return p if p.is_absolute() else self.root / p

    @property
    def pg_dsn(self) -> SecretStr | None:
        """The configured DSN (``BOTMAIN_PG_DSN``), or None for the embedded server."""
        return read_secret("PG_DSN")

    @property
    def lake_root(self) -> Path:
        return self.path(self.store.lake.root)

    def venue(self, name: str) -> Venue:
        cfg = self.venues.venues.get(name)
        if cfg is None:
            raise KeyError(f"unknown venue {name!r} (configured: {', '.join(sorted(self.venues.venues))})")
        return Venue(name=name, kind=cfg.kind, maker_fee=cfg.maker_fee, taker_fee=cfg.taker_fee)

    def instruments(self) -> list[Instrument]:
        out = []
        for inst in self.venues.instruments:
            for venue, listing in inst.listings.items():
                out.append(
                    Instrument(
                        venue=venue,
                        symbol=inst.symbol,
                        kind=inst.kind,
                        base=inst.base,
                        quote=inst.quote,
                        venue_symbol=listing.venue_symbol,
                        tick_size=listing.tick_size,
                        lot_size=listing.lot_size,
                        min_size=listing.min_size,
                        contract_size=listing.contract_size,
                        max_size=listing.max_size,
                        min_notional=listing.min_notional,
                    )
                )
        return out

    def instrument(self, key: str) -> Instrument:
        for inst in self.instruments():
            if inst.key == key:
                return inst
        raise KeyError(f"unknown instrument {key!r}: not listed in venues.yaml")


def load_config(directory: Path | str | None = None) -> BotmainConfig:
    directory = Path(directory).resolve() if directory else config_dir()
    if not directory.is_dir():
        raise ConfigError(f"{directory}: configuration directory not found")
    parts = {name: load_file(directory / f"{name}.yaml", model) for name, model in FILES.items()}
    config = BotmainConfig(root=directory.parent, directory=directory, **parts)  # type: ignore[arg-type]
    _check_cross_references(config, directory)
    return config


def _check_cross_references(config: BotmainConfig, directory: Path) -> None:
    keys = {inst.key for inst in config.instruments()}
    shown = _display(directory / "strategies.yaml")
    for i, strat in enumerate(config.strategies.strategies):
        for j, key in enumerate(strat.instruments):
            if key not in keys:
                venue = key.split(":", 1)[0]
                reason = (
                    f"unknown venue {venue!r}"
                    if venue not in config.venues.venues
                    else "not listed in venues.yaml"
                )
                raise ConfigError(f"{shown}: strategies[{i}].instruments[{j}]: {key!r}: {reason}")
    shown = _display(directory / "risk.yaml")
    names = {s.name for s in config.strategies.strategies}
    for name in config.risk.strategies:
        if name not in names:
            raise ConfigError(f"{shown}: strategies.{name}: no strategy named {name!r} in strategies.yaml")
    _check_risk(config, names, shown)
    shown = _display(directory / "simulation.yaml")
    for venue in config.simulation.costs.venues:
        if venue not in config.venues.venues:
            raise ConfigError(f"{shown}: costs.venues.{venue}: unknown venue {venue!r}")
    for key in config.simulation.costs.instruments:
        if key not in keys:
            raise ConfigError(f"{shown}: costs.instruments.{key}: {key!r} is not listed in venues.yaml")
    _check_market_data(config, keys, _display(directory / "market_data.yaml"))


def _check_risk(config: BotmainConfig, strategies: set[str], shown: str) -> None:
    risk, venues = config.risk, config.venues.venues
    known = f"known: {', '.join(sorted(venues))}"
    for i, venue in enumerate(risk.disabled_venues):
        if venue not in venues:
            raise ConfigError(f"{shown}: disabled_venues[{i}]: unknown venue {venue!r} ({known})")
    for venue in risk.treasury:
        if venue not in venues:
            raise ConfigError(f"{shown}: treasury.{venue}: unknown venue {venue!r} ({known})")
    for name in risk.allocations:
        if name not in strategies:
            raise ConfigError(f"{shown}: allocations.{name}: no strategy named {name!r} in strategies.yaml")
    bases = {inst.base for inst in config.venues.instruments}
    for asset in risk.exposure:
        if asset not in bases:
            raise ConfigError(
                f"{shown}: exposure.{asset}: no instrument in venues.yaml has base {asset!r} "
                f"(bases: {', '.join(sorted(bases))})"
            )


def _check_market_data(config: BotmainConfig, keys: set[str], shown: str) -> None:
    feeds = config.market_data.feeds
    for i, key in enumerate(feeds.replay.instruments or []):
        if key not in keys:
            raise ConfigError(f"{shown}: feeds.replay.instruments[{i}]: {key!r} is not listed in venues.yaml")
    for feed, venue, symbols, field_name in (
        ("drift", "drift", feeds.drift.markets, "markets"),
        ("jupiter", "jupiter", feeds.jupiter.instruments, "instruments"),
        ("raydium", "raydium", feeds.raydium.instruments, "instruments"),
    ):
        for i, symbol in enumerate(symbols):
            if f"{venue}:{symbol}" not in keys:
                raise ConfigError(f"{shown}: feeds.{feed}.{field_name}[{i}]: {symbol!r} is not listed on {venue} in venues.yaml")
    for i, venue in enumerate(feeds.cex.venues):
        cfg = config.venues.venues.get(venue)
        if cfg is None or cfg.kind.value != "cex" or not cfg.ccxt_id:
            raise ConfigError(f"{shown}: feeds.cex.venues[{i}]: {venue!r} is not a cex venue with a ccxt_id in venues.yaml")
