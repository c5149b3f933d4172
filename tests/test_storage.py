"""Datasets in object storage, against a real S3 server (moto's, on localhost): push and pull, the pointer's
conditional writes and the writer lock, leases and pins under gc, the local cache, faults and one-line errors."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from conftest import REPO, documents, prepare, token_files, write
from prepare import format as fmt
from prepare.storage import gc, remote
from prepare.storage.cache import Cache, CacheFull
from prepare.storage.lock import LOCK, BucketLock
from prepare.storage.push import pull, push
from prepare.storage.store import Bucket, Conflict, StorageError, parse
from prepare.storage.transfer import download
from s3_server import FaultyProxy

pytestmark = pytest.mark.xdist_group("s3")  # one worker, one server


def grow(data, tmp_path, name="more", rebuild=False):
    """A copy of `data` with one more input built in (all in new token files if `rebuild`): its next generation."""
    copy = tmp_path / name
    shutil.copytree(data, copy, ignore=shutil.ignore_patterns(fmt.LEASES, fmt.LOCK))
    sources = fmt.read_sources(copy, fmt.read_manifest(copy))
    folder = os.path.dirname(next(iter(sources)))
    write(tmp_path / "extra" / "extra.py", "def extra():\n    return 'a new input'\n" * 50)
    # The options conftest built it with.
    prepare("build", folder, tmp_path / "extra", "--out", copy, "--encoding", copy / fmt.TOKENIZER,
            "--shard-tokens", 20_000, "--val-fraction", 0.1, *(["--rebuild"] if rebuild else []))
    return copy


def keys(url, under=""):
    return {o.key for o in Bucket(url).list(under)}


def test_urls_name_scheme_bucket_prefix_and_endpoint():
    assert parse("s3://bkt/data/web/") == parse("s3://bkt/data/web")
    assert parse("s3://bkt/data/web").url("tokens/x.bin") == "s3://bkt/data/web/tokens/x.bin"
    local = parse("s3+http://127.0.0.1:9000/bkt/data")
    assert (local.endpoint, local.bucket, local.prefix) == ("http://127.0.0.1:9000", "bkt", "data")
    assert local.url("a") == "s3+http://127.0.0.1:9000/bkt/data/a"
    assert parse("gs://bkt").prefix == ""
    for url, says in [("ftp://bkt/x", "unknown scheme 'ftp'"), ("s3://AB/x", "is not a bucket name"),
                      ("s3+https://key:secret@host/bkt", "credentials do not belong in a URL")]:
        with pytest.raises(StorageError, match=says) as error:
            parse(url)
        assert "secret" not in str(error.value) and "\n" not in str(error.value)


def test_push_then_pull_round_trips_and_moves_only_what_is_missing(s3, dataset, tmp_path):
    url = f"{s3}/data/web"
    pushed = push(dataset, url)
    manifest = fmt.read_manifest(dataset)
    assert pushed.generation == manifest.generation and pushed.files == len(remote.immutable_files(
        manifest, os.listdir(dataset / fmt.TOKENIZER)))
    named = {f"tokens/{n}" for n in manifest.files} | {remote.POINTER, remote.generation_key(manifest.generation)}
    assert named <= keys(url)
    assert push(dataset, url).already, "a second push uploads nothing"

    pulled = pull(url, tmp_path / "copy")
    assert pulled.files == pushed.files and pulled.bytes == pushed.bytes
    assert token_files(tmp_path / "copy") == token_files(dataset)
    assert documents(tmp_path / "copy") == documents(dataset)
    assert os.listdir(tmp_path / "copy" / fmt.TOKENIZER) == os.listdir(dataset / fmt.TOKENIZER)
    assert pull(url, tmp_path / "copy").already

    more = grow(dataset, tmp_path)
    new = fmt.read_manifest(more)
    again = push(more, url)
    added = set(remote.immutable_files(new)) - set(remote.immutable_files(manifest))
    assert again.files == len(added) > 0, "only the files the bucket lacks are uploaded"
    assert pull(url, tmp_path / "copy").files == len(added)
    assert documents(tmp_path / "copy") == documents(more)
    with pytest.raises(StorageError, match=f"generation {new.generation} is in force there and .* is at generation"):
        push(dataset, url)  # an older directory never replaces a newer generation


def test_the_pointer_is_written_with_if_match_and_one_writer_holds_the_lock(s3, dataset):
    url = f"{s3}/data/web"
    push(dataset, url)
    bucket = Bucket(url)
    manifest, pointer = remote.read_pointer(bucket)
    bucket.write(remote.POINTER, remote.pointer_bytes(manifest), pointer.etag)  # a publisher that read it last
    with pytest.raises(Conflict):
        bucket.write(remote.POINTER, b"{}", pointer.etag)  # one that read it before: refused, not overwritten
    with pytest.raises(Conflict):
        bucket.write(remote.generation_key(manifest.generation), b"{}", "create")

    with BucketLock(bucket, "push"):
        with pytest.raises(StorageError, match=r"another prepare \(push, pid \d+ on .*\) is writing this dataset"):
            push(dataset, url)
    # A lock left by a process of this host that is gone is taken over at once.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    held = json.loads(bucket.read(LOCK)[0] or b"{}") if bucket.head(LOCK) else None
    assert held is None
    bucket.write(LOCK, json.dumps({"owner": "x", "what": "push", "host": os.uname().nodename,
                                   "pid": int(dead.stdout), "ttl": 60}).encode(), "create")
    assert push(dataset, url).already
    assert bucket.head(LOCK) is None


def test_gc_keeps_what_a_lease_or_a_pin_needs(s3, dataset, tmp_path):
    url = f"{s3}/data/web"
    push(dataset, url)
    bucket = Bucket(url)
    first, lease = remote.open_generation(bucket)
    more = grow(dataset, tmp_path, rebuild=True)
    push(more, url)  # its gc keeps the leased generation
    assert {f"tokens/{n}" for n in first.files} <= keys(url)
    lease.close()
    gc.gc(url)
    only_first = set(first.files) - set(fmt.read_manifest(more).files)
    assert only_first and not {f"tokens/{n}" for n in only_first} & keys(url)
    assert not keys(url, f"{fmt.LEASES}/g{first.generation:06d}")

    second = fmt.read_manifest(more)
    remote.pin(bucket, "run-1", "runs/x", second.generation)
    push(grow(more, tmp_path, "third", rebuild=True), url)  # nothing of the second generation is in force
    assert {f"tokens/{n}" for n in second.files} <= keys(url), "a pinned generation keeps its files"
    assert remote.open_generation(bucket, second.generation)[1].close() is None
    bucket.delete([f"{fmt.PINS}/run-1.json"])
    # A lease that was not renewed within its ttl no longer holds.
    bucket.write(f"{remote.leases_of(second.generation)}/gone.json", json.dumps({"ttl": 0}).encode())
    gc.gc(url)
    assert not {f"tokens/{n}" for n in second.files} & keys(url)
    with pytest.raises(fmt.DatasetError, match=f"generation {second.generation}, which the job's first process"):
        remote.open_generation(bucket, second.generation)


def test_a_push_killed_midway_leaves_the_previous_generation_whole_and_a_rerun_completes_it(s3, s3_server, dataset,
                                                                                             tmp_path):
    url = f"{s3}/data/web"
    push(dataset, url)
    more = grow(dataset, tmp_path)
    proxy = FaultyProxy(s3_server.port)
    proxy.hold(b"/generations/g")  # the push is held once its files are up, before its generation is written
    env = {**os.environ, **s3_server.env(endpoint=f"http://127.0.0.1:{proxy.port}"), "PYTHONPATH": REPO}
    code = f"from prepare.storage.push import push; push({str(more)!r}, {url!r})"
    process = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=REPO)
    assert proxy.holding.wait(60)
    new_files = {f"tokens/{n}" for n in fmt.read_manifest(more).files}
    assert new_files <= keys(url), "every file is uploaded before the generation that names it"

    # A reader starting now sees the previous generation, whole.
    manifest, lease = remote.open_generation(Bucket(url))
    assert manifest.generation == fmt.read_manifest(dataset).generation
    cache = Cache(tmp_path / "cache", 1 << 30)
    for f in manifest.files.values():
        cache.get(f.sha256, f.tokens * 2, lambda tmp, f=f: download(Bucket(url), f"tokens/{f.name}", tmp, f.tokens * 2,
                                                                    f.sha256, allocated=True)).close()
    lease.close()

    process.send_signal(signal.SIGKILL)
    process.wait()
    proxy.release()
    proxy.close()
    assert remote.read_pointer(Bucket(url))[0].generation == manifest.generation
    pushed = push(more, url)  # takes over the dead push's lock at once
    assert pushed.generation == fmt.read_manifest(more).generation and pushed.skipped > 0
    assert documents(pull(url, tmp_path / "copy") and tmp_path / "copy") == documents(more)


def test_the_cache_is_shared_bounded_and_never_evicts_a_file_in_use(s3, tmp_path):
    bucket = Bucket(f"{s3}/c")
    blobs = {name: os.urandom(100_000) for name in "abc"}
    sums = {name: hashlib.sha256(b).hexdigest() for name, b in blobs.items()}
    for name, data in blobs.items():
        bucket.write(name, data)
    fetched = []

    def fetch(name):
        def into(tmp):
            fetched.append(name)
            download(bucket, name, tmp, len(blobs[name]), sums[name], allocated=True)
        return into

    cache = Cache(tmp_path / "cache", 250_000)
    a = cache.get(sums["a"], 100_000, fetch("a"))
    other = Cache(tmp_path / "cache", 250_000)  # another process's view of the same directory
    again = other.get(sums["a"], 100_000, fetch("a"))
    assert fetched == ["a"] and open(again.path, "rb").read() == blobs["a"]
    again.close()
    b = cache.get(sums["b"], 100_000, fetch("b"))
    with pytest.raises(CacheFull, match="of 0.1 MB does not fit in the cache's bound of 0.2 MB beside the 0.2 MB"):
        cache.get(sums["c"], 100_000, fetch("c"))  # a and b are held
    b.close()
    c = cache.get(sums["c"], 100_000, fetch("c"))  # b, unheld, is evicted; a, held, stays
    assert os.path.exists(a.path) and not os.path.exists(cache.path(sums["b"])) and os.path.exists(c.path)
    for held in (a, c):
        held.close()


@pytest.mark.parametrize("fault", ["drop", "corrupt"])
def test_a_dropped_or_corrupted_download_is_fetched_again(s3, s3_server, tmp_path, monkeypatch, fault):
    data = os.urandom(3 << 20)
    Bucket(f"{s3}/f").write("blob", data)
    proxy = FaultyProxy(s3_server.port)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.port}")
    proxy.arm(fault)
    download(Bucket(f"{s3}/f"), "blob", tmp_path / "blob", len(data), hashlib.sha256(data).hexdigest())
    assert proxy.faults == 1 and open(tmp_path / "blob", "rb").read() == data
    proxy.close()


def test_bad_input_ends_in_one_line(s3, s3_server, dataset, monkeypatch):
    cases = [
        (lambda: push(dataset, "s3://no-such-bucket-here/x"), "s3://no-such-bucket-here: no such bucket"),
        (lambda: push(dataset, "hdfs://bkt/x"), "unknown scheme 'hdfs'"),
        (lambda: pull(f"{s3}/empty", "unused"), f"{s3}/empty: no dataset there"),
    ]
    for call, says in cases:
        with pytest.raises((StorageError, fmt.DatasetError), match=says) as error:
            call()
        assert "\n" not in str(error.value)
    for name, value in s3_server.env(s3_server.reader).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(StorageError, match=r"data/web/.lock: permission denied to write \(s3:PutObject\)"):
        push(dataset, f"{s3}/data/web")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    with pytest.raises(StorageError, match="no AWS credentials found"):
        push(dataset, f"{s3}/data/web")


def test_the_cache_on_a_full_disk_says_so_in_one_line(s3, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
    try:
        cache = Cache(disk / "cache", 1 << 40)
        with pytest.raises(CacheFull, match=f"{disk / 'cache'}: the cache's disk is full"):
            cache.get("ab" * 32, 4 << 20, lambda tmp: None)
        assert not os.listdir(disk / "cache" / "tmp")
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_remote_snapshot_reads_the_token_files_of_its_generation_through_the_cache(s3, dataset, tmp_path):
    from prepare.storage.reader import RemoteSnapshot, open_cache

    url = f"{s3}/data/web"
    push(dataset, url)
    manifest = fmt.read_manifest(dataset)
    snapshot = RemoteSnapshot(url, open_cache(tmp_path / "cache"))
    assert snapshot.manifest.generation == manifest.generation and snapshot.data_dir == url
    snapshot.files.ahead(sorted(manifest.files))
    for name in manifest.files:
        assert snapshot.open_tokens(name).tobytes() == token_files(dataset)[name]
    assert keys(url, f"{fmt.LEASES}/g{manifest.generation:06d}"), "the generation is leased while it is open"
    snapshot.close()
    assert not keys(url, f"{fmt.LEASES}/g{manifest.generation:06d}")
    again = RemoteSnapshot(url, open_cache(tmp_path / "cache"))
    Bucket(url).delete(f"tokens/{n}" for n in manifest.files)  # a cached file needs no request
    assert all(again.open_tokens(n).tobytes() == token_files(dataset)[n] for n in manifest.files)
    assert again.files.waited == 0
    again.close()


def test_objects_a_glob_names_are_inputs_identified_by_what_the_store_reports(s3, tmp_path):
    from prepare.storage.objects import expand_objects, fetch_object, glob_regex, same_object
    from prepare.storage.store import Conflict

    assert glob_regex("**/*.jsonl.gz").match("a/b/c.jsonl.gz") and glob_regex("**/*.jsonl.gz").match("c.jsonl.gz")
    assert not glob_regex("*.txt").match("a/b.txt") and glob_regex("[!x]?.txt").match("ab.txt")
    bucket = Bucket(f"{s3}/crawl")
    for key in ("2024/01/a.jsonl.gz", "2024/02/b.jsonl.gz", "2024/02/c.txt", "top.jsonl.gz"):
        bucket.write(key, key.encode() * 1000)
    fmt_of = lambda key: "jsonl" if ".jsonl" in key else "text"  # noqa: E731
    inputs = expand_objects(f"{s3}/crawl/**/*.jsonl.gz", fmt_of)
    assert [i["id"] for i in inputs] == [f"{s3}/crawl/{k}" for k in ("2024/01/a.jsonl.gz", "2024/02/b.jsonl.gz",
                                                                      "top.jsonl.gz")]
    assert [i["id"] for i in expand_objects(f"{s3}/crawl/2024", fmt_of)][-1] == f"{s3}/crawl/2024/02/c.txt"
    assert expand_objects(f"{s3}/crawl/top.jsonl.gz", fmt_of)[0]["format"] == "jsonl"
    with pytest.raises(FileNotFoundError):
        expand_objects(f"{s3}/crawl/*.parquet", fmt_of)
    first = inputs[0]
    copy = fetch_object(first, tmp_path)
    assert open(copy, "rb").read() == b"2024/01/a.jsonl.gz" * 1000 and copy.endswith("a.jsonl.gz")
    bucket.write("2024/01/a.jsonl.gz", b"changed")
    changed = expand_objects(f"{s3}/crawl/2024/01/*", fmt_of)[0]
    assert not same_object(first, changed) and same_object(changed, expand_objects(f"{s3}/crawl/2024/01/*", fmt_of)[0])
    with pytest.raises(Conflict):
        fetch_object(first, tmp_path)  # the object changed since it was listed
    assert os.listdir(tmp_path) == [os.path.basename(copy)]


def test_the_commands_push_pull_gc_and_unpin_take_bucket_urls(s3, dataset, tmp_path):
    url = f"{s3}/data/web"
    assert f"pushed generation {fmt.read_manifest(dataset).generation} to {url}" in prepare("push", dataset, url).output
    assert "already there, nothing to push" in prepare("push", dataset, url).output
    assert "pulled generation" in prepare("pull", url, tmp_path / "copy").output
    assert f"{url}: 0 objects removed" in prepare("gc", url).output
    assert f"no pin 'nobody'" in prepare("unpin", url, "nobody", ok=False).stderr
    remote.pin(Bucket(url), "run-1", "runs/x", fmt.read_manifest(dataset).generation)
    assert "pin run-1 released" in prepare("unpin", url, "run-1").output
    error = prepare("push", dataset, "s3://no-such-bucket-here/x", ok=False).stderr
    assert error == "error: s3://no-such-bucket-here: no such bucket\n"
