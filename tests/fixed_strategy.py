"""A test strategy that returns the target exposures it was built with."""

from __future__ import annotations

import numpy as np

from strategies.base import Params, Strategy
from strategies.frame import Frame


class NoParams(Params):
    pass


class Fixed(Strategy):
    """Returns the target exposure array it was built with, shape (legs, bars)."""

    name = "fixed_targets"
    Params = NoParams

    def __init__(self, targets) -> None:
        super().__init__()
        self.targets = np.atleast_2d(np.asarray(targets, dtype=np.float64))

    def signals(self, frame: Frame) -> np.ndarray:
        return self.targets[:, : len(frame)]  # a stream sees the history so far
