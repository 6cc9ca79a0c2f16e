"""``botmain train-selector``: build the venue selector's dataset from the lake, validate
xgboost walk-forward against the whitepaper rule and single-venue policies, register it."""
