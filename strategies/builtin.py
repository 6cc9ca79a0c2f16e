"""Importing this module registers the built-in strategies."""

from strategies import ema_cross, funding_carry, ml_direction  # noqa: F401
