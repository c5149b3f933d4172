"""Cluster jobs' claims: `tasks/g<generation>-of-<N>/` holds each task's claim (made before it writes a token
file) and result, until `prepare commit` publishes them or `prepare abort` removes them. Garbage collection
keeps the token files of every claimed run."""

import os

from prepare.format.layout import CLAIM_SUFFIX, TASKS


def jobs(data_dir):
    """Names of the jobs in progress (or abandoned but not aborted) in a dataset directory."""
    root = os.path.join(data_dir, TASKS)
    return sorted(n for n in os.listdir(root) if os.path.isdir(os.path.join(root, n))) if os.path.isdir(root) else []


def claimed_runs(data_dir):
    """Run ids claimed by the tasks of every job in the directory: their token files are the job's."""
    return {name[: -len(CLAIM_SUFFIX)] for job in jobs(data_dir)
            for name in os.listdir(os.path.join(data_dir, TASKS, job)) if name.endswith(CLAIM_SUFFIX)}
