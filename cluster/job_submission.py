"""Submit Botmain jobs to the cluster through Ray's job submission API (token auth on).

The entrypoint runs on the head node in Ray's environment: ``botmain up`` started Ray with
this virtualenv first on ``PATH``, so ``python -m jobs.<name>`` imports Botmain. On a
remote cluster (``cluster.address`` set) the project directory is shipped as the job's
``working_dir``; secrets are never put in the runtime env (it is visible in the
dashboard): each node reads ``BOTMAIN_*`` from its own environment.
"""

from __future__ import annotations

import asyncio
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


def follow(config: BotmainConfig, submission_id: str, out: TextIO = sys.stdout) -> str:
    """Stream the job's logs until it ends; returns its final status name."""
    client = _client(config)

    async def tail() -> None:
        async for chunk in client.tail_job_logs(submission_id):
            out.write(chunk)
            out.flush()

    asyncio.run(tail())
    status = client.get_job_status(submission_id)
    while not status.is_terminal():
        time.sleep(0.2)
        status = client.get_job_status(submission_id)
    return status.value
