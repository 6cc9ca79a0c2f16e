"""The simulator: compiled kernel, its settings, market data assembly, metrics, reports."""
