"""The one stack proof: the locked dependencies import together in one process, at the
versions pyproject.toml resolves them to (Ray 2.60 and driftpy, with driftpy's exact pins
overridden, on NumPy 2). What the libraries do is tested through our code that uses them."""

from __future__ import annotations

import importlib

import numpy as np
import packaging
from packaging.version import Version

STACK = [
    "ray", "ray.serve", "driftpy", "solana", "solders", "xgboost", "numba", "asyncpg",
    "ccxt", "jwt", "pyarrow", "pandas", "prometheus_client", "zmq", "msgspec",
]  # fmt: skip


def test_the_locked_stack_imports_together_at_the_resolved_versions():
    for module in STACK:
        assert importlib.import_module(module).__name__ == module
    import ray

    assert ray.__version__ == "2.60.0"
    assert Version(np.__version__).major == 2
    # driftpy pins packaging==23.1; Ray 2.60 needs >=24.2 (the override in pyproject.toml).
    assert Version(packaging.__version__) >= Version("24.2")
