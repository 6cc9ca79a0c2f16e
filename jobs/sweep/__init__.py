"""Parameter sweeps as Ray jobs: market data in the object store once, combos fanned out."""
