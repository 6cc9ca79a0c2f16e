"""Submit Botmain jobs to the cluster through Ray's job submission API (token auth on).

The entrypoint runs on the head node in Ray's environment: ``botmain up`` started Ray with
this virtualenv first on ``PATH``, so ``python -m jobs.<name>`` imports Botmain. On a
remote cluster (``cluster.address`` set) the project directory is shipped as the job's
``working_dir``; secrets are never put in the runtime env (it is visible in the
dashboard): each node reads ``BOTMAIN_*`` from its own environment.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shlex
import sys
import time
from typing import TextIO

from cluster.config import BotmainConfig
from cluster.runtime import dashboard_alive, enable_token_auth, endpoints

SHIPPED_EXCLUDES = [".venv", "var", ".git", "**/__pycache__", "reports"]
AGENT_WAIT_S = 60.0  # how long a submission waits for a just-started cluster's job agent


class JobFailed(RuntimeError):
    pass


def _client(config: BotmainConfig):
    enable_token_auth(create=False)
    from ray.job_submission import JobSubmissionClient

    url = endpoints(config.cluster).dashboard_url
    if not dashboard_alive(url):
        raise JobFailed(f"no Ray cluster answers at {url}: run `botmain up` first")
    return JobSubmissionClient(url)


def submit(config: BotmainConfig, argv: list[str], *, job_name: str) -> str:
    """Submit ``python -m <argv...>``; returns the submission id."""
    client = _client(config)
    runtime_env: dict = {}
    if config.cluster.address:
        runtime_env["working_dir"] = str(config.root)
        runtime_env["excludes"] = SHIPPED_EXCLUDES
    entrypoint = "python -m " + " ".join(shlex.quote(a) for a in argv)
    submission_id = f"{job_name}-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 100000:05d}"
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            return client.submit_job(
                entrypoint=entrypoint, runtime_env=runtime_env or None, submission_id=submission_id, metadata={"botmain_job": job_name}
            )
        except RuntimeError as exc:
            # Right after `botmain up` the dashboard answers before its job agent has
            # registered; Ray says so with this message. Anything else is a real refusal.
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


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


def follow(config: BotmainConfig, submission_id: str, out: TextIO = sys.stdout) -> str:
    """Stream the job's logs until it ends (without Ray's INFO lines); returns its final status name."""
    client = _client(config)
    logging.getLogger("ray.dashboard.modules.job.sdk").setLevel(logging.WARNING)  # "WebSocket closed ..."
    shown = RayInfoFilter(out)

    async def tail() -> None:
        async for chunk in client.tail_job_logs(submission_id):
            shown.write(chunk)

    try:
        asyncio.run(tail())
    finally:
        shown.close()
    status = client.get_job_status(submission_id)
    while not status.is_terminal():
        time.sleep(0.2)
        status = client.get_job_status(submission_id)
    return status.value
