"""A followed job's log as the command shows it: the job's own output and every warning,
without the INFO lines Ray itself writes into it."""

from __future__ import annotations

import re
from typing import TextIO

# What Ray itself writes into a job's log at INFO ("Runtime env is setting up.", "Running
# entrypoint for job ..."): the command has said which job it submitted; warnings and errors,
# Ray's or the job's, and everything the job prints pass through.
_RAY_INFO = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+INFO \S+\.py:\d+ -- |^Running entrypoint for job \S+: ")


class RayInfoFilter:
    """Passes a job's log on line by line, leaving out Ray's own INFO lines."""

    def __init__(self, out: TextIO) -> None:
        self.out, self._partial = out, ""

    def write(self, chunk: str) -> None:
        lines = (self._partial + chunk).split("\n")
        self._partial = lines.pop()
        kept = [line for line in lines if not _RAY_INFO.match(line)]
        if kept:
            self.out.write("\n".join(kept) + "\n")
            self.out.flush()

    def close(self) -> None:
        if self._partial and not _RAY_INFO.match(self._partial):
            self.out.write(self._partial + "\n")
        self._partial = ""
        self.out.flush()
