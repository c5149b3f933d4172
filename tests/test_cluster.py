"""One corpus on many machines: tasks any scheduler can run, one commit, and Ray as the executor."""

import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import documents, prepare, prepare_process, sources, wait_until_gone, write
from prepare import format as fmt
from prepare.sources import stdlib_files


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """120 files of CPython's sources and a JSONL file: enough documents that val is never empty."""
    root = tmp_path_factory.mktemp("cluster") / "corpus"
    for i, f in enumerate(stdlib_files()[300:420]):
        write(root / f"{i:03d}.py", open(f, "rb").read(), mode="wb")
    write(root / "records.jsonl", "".join(json.dumps({"text": f"record {i} " * (i % 7 + 1)}) + "\n" for i in range(200)))
    return root


ARGS = ["--val-fraction", 0.1, "--shard-tokens", 50_000]


def same_dataset(a, b):
    """Equal documents per split (as multisets), token counts, and per-input records but for file layout."""
    ma, mb = fmt.read_manifest(a), fmt.read_manifest(b)
    assert (ma.documents, {s: ma.tokens(s) for s in fmt.SPLITS}) == (mb.documents, {s: mb.tokens(s) for s in fmt.SPLITS})
    for split in fmt.SPLITS:
        assert documents(a, split) == documents(b, split)
    layout = ("ranges", "tail")
    strip = lambda records: [{k: v for k, v in r.items() if k not in layout} for r in records]
    assert strip(sources(a)) == strip(sources(b))


@pytest.fixture(scope="module")
def single(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "data"
    prepare("build", corpus, "--out", out, *ARGS)
    return out


@pytest.mark.parametrize("tasks", [1, 3, 7])
def test_any_number_of_tasks_in_any_order_makes_the_same_dataset(corpus, single, tmp_path, tasks):
    out = tmp_path / "data"
    order = list(range(tasks))
    random.Random(tasks).shuffle(order)
    for task in order:
        prepare("build", corpus, "--out", out, *ARGS, "--tasks", tasks, "--task", task)
    result = prepare("commit", out)
    assert f"{tasks} tasks committed" in result.stdout
    same_dataset(out, single)
    prepare("verify", out)
    # A task rerun after the commit finds its part done: nothing tokenized.
    assert "tokenized 0 inputs" in prepare("build", corpus, "--out", out, *ARGS, "--tasks", tasks, "--task", 0).stdout


def test_the_partition_is_a_function_of_the_inputs(corpus, tmp_path):
    out = tmp_path / "data"
    runs = []
    for _ in range(2):
        prepare("build", corpus, "--out", out, *ARGS, "--tasks", 3, "--task", 1)
        with open(out / fmt.TASKS / "g000000-of-3" / "task-00001.json") as f:
            runs.append(sorted(r["id"] for r in json.load(f)["records"]))
    assert runs[0] == runs[1] and 0 < len(runs[0]) < 121


def test_commit_waits_for_every_task_and_a_killed_task_leaves_nothing_it_takes(corpus, single, tmp_path):
    out = tmp_path / "data"
    prepare("build", corpus, "--out", out, *ARGS, "--tasks", 3, "--task", 0)
    killed = prepare_process("build", corpus, "--out", out, *ARGS, "--tasks", 3, "--task", 2, "--workers", 1)
    deadline = time.time() + 60
    while time.time() < deadline and not any(n.endswith(".tmp") for n in os.listdir(out / fmt.TOKENS)):
        time.sleep(0.005)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    result = prepare("commit", out, ok=False)
    assert "2 of 3 tasks have not finished: 1, 2" in result.stderr and "--tasks 3 --task I" in result.stderr
    assert not os.path.exists(out / fmt.MANIFEST), "nothing published"
    for task in (2, 1):  # the scheduler's retry, and the task that never ran
        prepare("build", corpus, "--out", out, *ARGS, "--tasks", 3, "--task", task)
    prepare("commit", out)
    same_dataset(out, single)
    assert set(os.listdir(out / fmt.TOKENS)) == set(fmt.read_manifest(out).files), "the killed task's files are collected"


def test_the_nightly_run_after_a_cluster_build_does_only_what_changed(corpus, tmp_path):
    local = tmp_path / "corpus"
    shutil.copytree(corpus, local)
    out = tmp_path / "data"
    for task in range(3):
        prepare("build", local, "--out", out, *ARGS, "--tasks", 3, "--task", task)
    prepare("commit", out)
    write(local / "new.txt", "A document added after the cluster build.")
    write(local / "000.py", "changed = True\n")
    result = prepare("build", local, "--out", out, *ARGS)  # one machine, as under cron
    assert "tokenized 2 inputs (120 unchanged)" in result.stdout
    for task in range(3):  # or the cluster again: only the tasks owning a change tokenize
        prepare("build", local, "--out", out, *ARGS, "--tasks", 3, "--task", task)
    assert "0 inputs" in prepare("commit", out).stdout


def test_results_of_an_older_generation_are_refused(corpus, tmp_path, monkeypatch):
    out = tmp_path / "data"
    from prepare.cluster import job

    planned = job.open_build

    def planned_then_published(*args):  # a single build that had begun before the task publishes meanwhile
        opened = planned(*args)
        prepare("build", corpus, "--out", out, *ARGS)
        return opened

    monkeypatch.setattr(job, "open_build", planned_then_published)
    prepare("build", corpus, "--out", out, *ARGS, "--tasks", 2, "--task", 0)
    result = prepare("commit", out, ok=False)
    assert "g000000-of-2" in result.stderr and "older generations" in result.stderr


def test_gc_and_builds_during_a_job_leave_it_whole(corpus, single, tmp_path, monkeypatch):
    """A nightly build or `prepare gc` between a job's tasks, or while a task writes, must not take the
    job's files: gc keeps what the job's tasks claimed, and a build waits for a commit or an abort."""
    out = tmp_path / "data"
    prepare("build", corpus / "000.py", "--out", out, *ARGS)  # a dataset in force, as under cron
    prepare("build", corpus, "--out", out, *ARGS, "--tasks", 2, "--task", 0)
    prepare("gc", out)
    from prepare import writer

    append, during = writer.FileWriter.append, []

    def append_then_interfere(self, *args):  # task 1 has its temporary token file open here
        ranges = append(self, *args)
        if not during:
            during.append(prepare("gc", out))
            during.append(prepare("build", corpus, "--out", out, *ARGS, ok=False))
        return ranges

    monkeypatch.setattr(writer.FileWriter, "append", append_then_interfere)
    prepare("build", corpus, "--out", out, *ARGS, "--tasks", 2, "--task", 1, "--workers", 1)
    monkeypatch.undo()
    refused = during[1].stderr
    assert "a cluster job is in progress (g000001-of-2)" in refused and "prepare commit" in refused and "prepare abort" in refused
    prepare("gc", out)
    prepare("commit", out)
    same_dataset(out, single)
    prepare("verify", out)
    assert set(os.listdir(out / fmt.TOKENS)) == set(fmt.read_manifest(out).files)
    assert "up to date" in prepare("build", corpus, "--out", out, *ARGS).stdout, "builds go on once the job is committed"


def test_abandoning_a_job_is_an_explicit_command(corpus, tmp_path):
    out = tmp_path / "data"
    prepare("build", corpus / "000.py", "--out", out, *ARGS)
    before = fmt.read_manifest(out)
    prepare("build", corpus, "--out", out, *ARGS, "--tasks", 3, "--task", 1)
    assert len(os.listdir(out / fmt.TOKENS)) > len(before.files)
    assert "1 jobs abandoned (g000001-of-3)" in prepare("abort", out).stdout
    assert fmt.read_manifest(out) == before and not fmt.jobs(out)
    assert set(os.listdir(out / fmt.TOKENS)) == set(before.files), "the job's token files are gone, the dataset's kept"
    prepare("verify", out)
    assert "tokenized 120 inputs" in prepare("build", corpus, "--out", out, *ARGS).stdout


# Ray: one local instance for this test process's Ray tests (the xdist group "ray" keeps them on one worker), and
# only ours: its own temporary directory and an explicit address (never "auto", which finds whatever cluster the
# machine runs, a user's or another clone's test run), stopped by killing its own process tree (`ray stop` stops
# every Ray on the machine). It runs in processes of its own: a test process that forks (prepare's tokenizer
# pool) must not hold Ray's threads.


@dataclasses.dataclass
class RayCluster:
    address: str
    head: subprocess.Popen  # `ray start --head --block`: every process of the cluster descends from it


def descendants(pid):
    """Every process below `pid` in the process tree (Ray's workers set process groups of their own)."""
    children = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.fixture(scope="session")
def ray_cluster():
    pytest.importorskip("ray")
    ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    temp_dir = tempfile.mkdtemp(prefix="gptmill-ray-")  # short: Ray's socket paths lie below it
    head = subprocess.Popen([ray_cli, "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
                             "--temp-dir", temp_dir, "--num-cpus", "2", "--object-store-memory", str(100 << 20),
                             "--include-dashboard=false", "--include-log-monitor=false", "--disable-usage-stats"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    output = []
    for line in head.stdout:  # up once it says it blocks; an exit before that ends the loop
        output.append(line)
        if "block forever" in line:
            break
    try:
        assert head.poll() is None, "ray start failed:\n" + "".join(output)
        yield RayCluster(f"127.0.0.1:{port}", head)
    finally:
        tree = [*descendants(head.pid), head.pid]
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        head.wait()
        wait_until_gone(tree)
        shutil.rmtree(temp_dir, ignore_errors=True)


def on_ray(cluster, *args):
    proc = prepare_process(*args, "--executor", "ray", env={"RAY_ADDRESS": cluster.address})
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    return out


@pytest.mark.xdist_group("ray")
def test_ray_builds_the_same_dataset(ray_cluster, corpus, single, tmp_path):
    out = on_ray(ray_cluster, "build", corpus, "--out", tmp_path / "data", *ARGS, "--tasks", 4)
    assert "4 tasks on Ray" in out
    same_dataset(tmp_path / "data", single)


def writing_worker(cluster, folder):
    """The process of `cluster` that has a temporary token file of `folder` open: a worker writing a task's tokens."""
    for pid in descendants(cluster.head.pid):
        try:
            targets = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:  # gone meanwhile
            continue
        if any(t.startswith(f"{folder}{os.sep}") and t.endswith(fmt.TMP_SUFFIX) for t in targets):
            return pid
    return None


@pytest.mark.xdist_group("ray")
def test_a_ray_worker_killed_mid_task_is_retried_to_the_same_result(ray_cluster, corpus, single, tmp_path):
    import threading

    out = tmp_path / "data"
    killed, built = [], threading.Event()

    def kill_the_writer():
        while not killed and not built.is_set():
            pid = writing_worker(ray_cluster, out / fmt.TOKENS)
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.002)

    killer = threading.Thread(target=kill_the_writer)
    killer.start()
    try:
        on_ray(ray_cluster, "build", corpus, "--out", out, *ARGS, "--tasks", 2)
    finally:
        built.set()
        killer.join()
    assert killed, "a worker was killed while writing its tokens"
    same_dataset(out, single)
