"""Submit Botmain jobs to the cluster through Ray's job submission API (token auth on).

The entrypoint runs on the head node in Ray's environment: ``botmain up`` started Ray with
this virtualenv first on ``PATH``, so ``python -m jobs.<name>`` imports Botmain.

A job reads the configuration the submitting command read, not whatever Ray's processes
inherited when the cluster was started (``job_runtime_env``):

* local head (``cluster.address`` null): the job runs on this machine and is told the
  directory, ``BOTMAIN_CONFIG_DIR`` in its runtime env's ``env_vars``;
* remote cluster (``cluster.address`` set): the directory may exist on this machine only,
  so its files travel with the job. The project directory is staged with the
  configuration's files in place of its ``configs/`` and shipped as the job's
  ``working_dir``, and ``BOTMAIN_CONFIG_DIR`` names that shipped ``configs/``.

Secrets are never put in the runtime env (it is visible in the dashboard) and the
configuration holds none (the loader refuses them): each node reads ``BOTMAIN_*`` secrets
from its own environment.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from cluster.config import BotmainConfig
from cluster.config.loader import CONFIG_DIR_VAR, FILES, PROJECT_ROOT
from cluster.job_logs import RayInfoFilter
from cluster.runtime import dashboard_alive, enable_token_auth, endpoints

NOT_SHIPPED = {".venv", "var", ".git", "reports"}  # top-level entries of the project left behind
SHIPPED_CONFIG_DIR = "configs"  # in the shipped working directory, relative to it
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
    entrypoint = "python -m " + " ".join(shlex.quote(a) for a in argv)
    submission_id = f"{job_name}-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 100000:05d}"
    deadline = time.monotonic() + AGENT_WAIT_S
    with job_runtime_env(config) as runtime_env:  # a staged working_dir is uploaded by submit_job
        while True:
            try:
                return client.submit_job(
                    entrypoint=entrypoint, runtime_env=runtime_env, submission_id=submission_id, metadata={"botmain_job": job_name}
                )
            except RuntimeError as exc:
                # Right after `botmain up` the dashboard answers before its job agent has
                # registered; Ray says so with this message. Anything else is a real refusal.
                if "No available agent" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(1.0)


@contextmanager
def job_runtime_env(config: BotmainConfig) -> Iterator[dict]:
    """The runtime env that makes a job read ``config``'s files (module docstring); a staged
    working directory lives until the ``with`` block ends."""
    if not config.cluster.address:
        yield {"env_vars": {CONFIG_DIR_VAR: str(config.directory)}}
        return
    with tempfile.TemporaryDirectory(prefix="botmain-job-") as tmp:
        staged = stage_working_dir(config, Path(tmp) / "botmain")
        yield {"working_dir": str(staged), "env_vars": {CONFIG_DIR_VAR: SHIPPED_CONFIG_DIR}}


def stage_working_dir(config: BotmainConfig, target: Path) -> Path:
    """A copy of the project (its code and ``data/``, without ``NOT_SHIPPED``) whose
    ``configs/`` holds ``config``'s files: what a job on another machine runs in."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        top = Path(directory) == PROJECT_ROOT
        return {n for n in names if n == "__pycache__" or (top and (n in NOT_SHIPPED or n == SHIPPED_CONFIG_DIR))}

    shutil.copytree(PROJECT_ROOT, target, ignore=ignore)
    shipped = target / SHIPPED_CONFIG_DIR
    shipped.mkdir()
    for name in FILES:
        shutil.copy2(config.directory / f"{name}.yaml", shipped / f"{name}.yaml")
    return target


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
