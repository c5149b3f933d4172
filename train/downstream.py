"""Downstream tasks during and after training: the eval tasks (prepare/evals/, read without torch) loaded once
by a job's first rank, and a note where a run's dataset was not decontaminated against the tasks it is scored
on."""

from prepare.evals import TaskError, load_suites, parse_suites
from prepare.evals.cache import FetchError


def decontamination_notes(data_dirs, suites):
    """One line for each dataset a run trained on that was not decontaminated against a suite it is scored on
    (`prepare build --decontaminate`): its scores may count items the model saw in training."""
    from prepare.format import DatasetError, read_manifest

    notes = []
    for path in data_dirs:
        try:
            done = read_manifest(path).options.get("decontaminate") or []
        except DatasetError:
            notes.append(f"note: the run's dataset {path} is not here: whether it was decontaminated against "
                         f"{', '.join(suites)} is unknown")
            continue
        missing = [suite for suite in suites if suite not in done]
        if missing:
            notes.append(f"note: the run's dataset {path} was not decontaminated against {', '.join(missing)} "
                         f"(prepare build --decontaminate {','.join(missing)}): its scores may count items the "
                         f"model trained on")
    return notes


def load_eval_tasks(config, encoding, world):
    """The downstream tasks that --eval-tasks names, read by rank 0 first (which downloads them once), then by
    the others from the cache; one message on failure."""
    if not config.eval_tasks:
        return []

    def loaded():
        try:
            return load_suites(parse_suites(config.eval_tasks), encoding, config.eval_tasks_max), None
        except (TaskError, FetchError) as e:
            return None, f"--eval-tasks: {e}"

    tasks, error = loaded() if world.is_main else (None, None)
    if world.broadcast(error) is None and not world.is_main:
        tasks, error = loaded()
    error = world.first_error(error)
    if error:
        from train.distributed import JobError

        raise JobError(error)
    return tasks
