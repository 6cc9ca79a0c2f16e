"""The venue selector: for one trade (instrument, side, size, holding horizon), which venue
and market kind (a perp or spot) costs least all-in.

* ``candidates``: the listings that give the same exposure (the base asset's perps and its
  USD-quoted spot markets, from venues.yaml), each with the simulator's cost settings.
* ``costs``: the all-in cost of a round trip over the horizon, in bps of notional: fees and
  price concession both ways (the simulator's impact models), funding paid while holding a
  perp, and the change of the perp's premium over its index.
* ``features``: what the model sees per candidate (``VenueState`` + the request).
* ``history``: venue states at any time from the lake (training, and serving without the MDS).
* ``rule``: the whitepaper's ``choose_execution_venue``, the baseline to beat.
* ``model``: the trained xgboost model and ``Selector``, which ranks candidates by the
  model's predicted cost, or by the rule when no model is active.
"""
