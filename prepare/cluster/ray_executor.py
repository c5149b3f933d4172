"""`--executor ray`: Ray, an engine that already schedules, spreads and retries work, runs a job's tasks (any array
scheduler can run the same tasks without it), then the job is committed."""

import logging
import os
import sys
import time

from prepare.build import check_output_dir
from prepare.cluster.commit import commit
from prepare.cluster.job import run_task
from prepare.plan import BuildError


def build_on_ray(sources, data_dir, opts, tasks, address=None, rebuild=False, retries=3):
    """Run the `tasks` tasks on Ray (a local instance, or the cluster at `address` / RAY_ADDRESS), retrying
    tasks whose worker or machine died, then commit. Returns (manifest in force, summaries)."""
    try:
        import ray
    except ImportError:
        raise BuildError("--executor ray needs Ray: pip install 'gptmill[ray]'") from None
    from tqdm import tqdm

    check_output_dir(data_dir, rebuild)
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, include_dashboard=False, logging_level=logging.ERROR)
    remote = ray.remote(num_cpus=1, max_retries=retries)(run_task)
    pending = {remote.remote(sources, os.path.abspath(data_dir), opts, i, tasks, 1, rebuild): i for i in range(tasks)}
    summaries, start = [], time.perf_counter()
    bar = tqdm(total=tasks, unit="task", desc="tasks", disable=not sys.stderr.isatty())
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        task = pending.pop(done[0])
        try:
            summaries.append(ray.get(done[0]))
        except ray.exceptions.RayTaskError as e:  # a user error (bad input, missing path): the task's own message
            for ref in pending:
                ray.cancel(ref)
            cause = e.cause if getattr(e, "cause", None) is not None else e
            raise BuildError(f"task {task}: {cause}") from None
        tokens, text = sum(s["tokens"] for s in summaries), sum(s["text_bytes"] for s in summaries)
        seconds = time.perf_counter() - start
        bar.set_postfix_str(f"{tokens:,} tokens, {text / 1e6 / seconds:.2f} MB/s")
        bar.update(1)
    bar.close()
    manifest, _ = commit(data_dir, opts)
    return manifest, summaries
