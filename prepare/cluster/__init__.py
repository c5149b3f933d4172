"""One corpus on many machines: a build cut into tasks that any scheduler runs, and one commit.

    job.py           which inputs are task i's, running one task, its result (tasks/g<generation>-of-<N>/)
    duplicates.py    --dedup across tasks: each task's placements, resolved at the commit as one build would
    commit.py        `prepare commit` (all N results as one generation) and `prepare abort`
    ray_executor.py  `--executor ray`: Ray schedules and retries the same tasks, then commits
"""

from prepare.cluster.commit import abort, commit
from prepare.cluster.job import run_task
from prepare.cluster.ray_executor import build_on_ray
