"""Following a job's log: Ray's own INFO lines are left out, whatever chunks they come in;
the job's output and anyone's warnings pass through."""

from __future__ import annotations

import io

from cluster.job_logs import RayInfoFilter

LOG = (
    "2026-12-02 13:46:44,638\tINFO job_manager.py:581 -- Runtime env is setting up.\n"
    "Running entrypoint for job ingest-20261202-134642-66027: python -m jobs.ingest data/sample\n"
    "file                                   rows read\n"
    "2026-12-02 13:47:17,753\tINFO worker.py:1691 -- Using address 192.0.2.2:6379\n"
    "2026-12-02 13:47:17,800\tWARNING worker.py:1900 -- the object store is full\n"
    "INFO is a word our job may print too\n"
    "6 file(s) ingested, 0 refused"
)
SHOWN = (
    "file                                   rows read\n"
    "2026-12-02 13:47:17,800\tWARNING worker.py:1900 -- the object store is full\n"
    "INFO is a word our job may print too\n"
    "6 file(s) ingested, 0 refused\n"
)


def test_ray_info_lines_are_left_out_in_any_chunking():
    for size in (1, 7, 64, len(LOG)):
        out = io.StringIO()
        shown = RayInfoFilter(out)
        for i in range(0, len(LOG), size):
            shown.write(LOG[i : i + size])
        shown.close()
        assert out.getvalue() == SHOWN, size
