"""Bucket datasets in use, against moto's real S3 server: sources in a bucket read once, a cluster job through the
bucket, and training from one (the windows of a local copy, exact resume, --follow-data, one-line errors)."""

import json
import os

import pytest
from click.testing import CliRunner

from conftest import documents, prepare, write
from prepare import format as fmt
from prepare.storage import remote
from prepare.storage.push import push
from prepare.storage.store import Bucket, StorageError
from s3_server import FaultyProxy
from test_storage import grow, keys
from train.cli import cli as train_cli

pytestmark = pytest.mark.xdist_group("s3")  # one worker, one server



def test_a_cluster_job_through_the_bucket_publishes_what_one_build_makes(s3, corpus, tmp_path):
    corpus, url = corpus[0], f"{s3}/data/c"
    prepare("build", corpus, "--out", tmp_path / "single")
    for task in (1, 0):  # any order; the machines share only the bucket
        result = prepare("build", corpus, "--out", url, "--tasks", 2, "--task", task)
        assert f"{url}: task {task} of 2 tokenized" in result.output
    assert "2 tasks committed" in prepare("commit", url).output
    assert not keys(url, fmt.TASKS), "the job's folder goes once it is published"
    prepare("pull", url, tmp_path / "copy")
    assert documents(tmp_path / "copy") == documents(tmp_path / "single")
    assert "no task results to commit" in prepare("commit", url, ok=False).stderr

    write(corpus / "new.txt", "A document added for the next night.\n")
    prepare("build", corpus, "--out", url, "--tasks", 2, "--task", 0)
    with pytest.raises(StorageError, match="a cluster job is in progress there"):
        push(tmp_path / "single", url)
    before = keys(url, fmt.TOKENS)
    assert "1 jobs abandoned" in prepare("abort", url).output
    assert keys(url, fmt.TOKENS) <= before and not keys(url, fmt.TASKS)
    line = prepare("build", corpus, "--out", url, ok=False).stderr.strip()
    assert line.startswith(f"error: --out {url}: a build writes a directory; publish it with `python -m prepare push")


def test_sources_in_a_bucket_are_read_once_and_again_only_when_changed(s3, s3_server, tmp_path, monkeypatch):
    import gzip

    bucket = Bucket(f"{s3}/crawl")
    texts = {f"2024/{m:02d}/part.jsonl.gz": [f"document {m}.{i} about the month" for i in range(3)] for m in (1, 2, 3)}
    for key, docs in texts.items():
        bucket.write(key, gzip.compress("".join(json.dumps({"text": t}) + "\n" for t in docs).encode()))
    bucket.write("2024/notes.txt", b"not matched")
    proxy = FaultyProxy(s3_server.port)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.port}")
    pattern, out = f"{s3}/crawl/**/*.jsonl.gz", tmp_path / "web"
    prepare("build", pattern, "--out", out)
    assert documents(out) == sorted(t for docs in texts.values() for t in docs)
    records = {r["id"]: r for r in fmt.read_sources(out, fmt.read_manifest(out)).values()}
    assert set(records) == {f"{s3}/crawl/{k}" for k in texts} and all(r["etag"] and r["size"] for r in records.values())
    reads = lambda: [r for r in proxy.requests if r.startswith("GET") and "list-type" not in r]  # noqa: E731
    assert len(reads()) == 3

    proxy.requests.clear()
    prepare("build", pattern, "--out", out)
    assert reads() == [], "an unchanged object is never downloaded again"
    texts["2024/02/part.jsonl.gz"] = ["a changed month"]
    bucket.write("2024/02/part.jsonl.gz", gzip.compress(b'{"text": "a changed month"}\n'))
    prepare("build", pattern, "--out", out)
    assert len(reads()) == 1 and "2024/02/part.jsonl.gz" in reads()[0]
    assert documents(out) == sorted(t for docs in texts.values() for t in docs)
    assert prepare("build", f"{s3}/crawl/*.parquet", "--out", out, ok=False).stderr == \
        f"error: {s3}/crawl/*.parquet: no object matches this URL\n"
    proxy.close()


def test_training_from_a_bucket_sees_the_windows_of_a_local_copy_and_resumes_exactly(s3, dataset, small_dataset,
                                                                                      tmp_path, monkeypatch):
    def fit(*args):
        tiny = ["--model", "tiny", "--n-layer", 1, "--n-head", 2, "--n-embd", 32, "--context", 32, "--batch-size", 8,
                "--no-compile", "--device", "cpu", "--no-samples", "--eval-windows", 16, "--eval-every", 2]
        result = CliRunner().invoke(train_cli, ["fit", *map(str, [*args, *tiny])], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        lines = map(json.loads, open(args[args.index("--out") + 1] / "metrics.jsonl"))
        return [(m["loss"], m.get("val_loss")) for m in lines]

    monkeypatch.setenv("GPTMILL_CACHE_DIR", str(tmp_path / "cache"))
    url = f"{s3}/data/web"
    push(dataset, url)
    mix = ["--data", f"{small_dataset}=0.3"]
    local = fit("--data", dataset, *mix, "--out", tmp_path / "local", "--max-steps", 4)
    remote_run = fit("--data", url, *mix, "--out", tmp_path / "remote", "--max-steps", 2)
    remote_run = fit("--out", tmp_path / "remote", "--resume", "--max-steps", 4)
    assert [m[0] for m in remote_run] == [m[0] for m in local], "the same windows, the same losses, across a resume"
    assert remote_run[-1] == local[-1], "and the same evaluation"
    line = json.loads(open(tmp_path / "remote" / "metrics.jsonl").readline())
    assert line["data_wait_sec"] >= 0 and line["generation/web"] == fmt.read_manifest(dataset).generation
    cached = [f for _, _, files in os.walk(tmp_path / "cache" / "tokens" / "objects") for f in files]
    assert sorted(cached) == sorted(f.sha256 for f in fmt.read_manifest(dataset).files.values())
    assert not keys(url, fmt.LEASES + "/"), "the run's leases are gone with it"


def test_a_run_following_a_bucket_dataset_pins_each_generation_there_and_draws_the_new_documents(s3, dataset, tmp_path,
                                                                                                monkeypatch):
    def fit(*args):
        result = CliRunner().invoke(train_cli, ["fit", *map(str, args)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    monkeypatch.setenv("GPTMILL_CACHE_DIR", str(tmp_path / "cache"))
    url = f"{s3}/data/web"
    push(dataset, url)
    run = ["--out", tmp_path / "run"]
    fit("--data", url, *run, "--model", "tiny", "--n-layer", 1, "--n-head", 2, "--n-embd", 32, "--context", 32,
        "--batch-size", 8, "--no-compile", "--device", "cpu", "--no-samples", "--eval-windows", 4, "--max-steps", 2,
        "--follow-data")
    first = fmt.read_manifest(dataset).generation
    (pin,) = remote.read_pins(Bucket(url)).values()
    assert pin["generations"] == [first]
    more = grow(dataset, tmp_path)
    push(more, url)
    said = fit(*run, "--resume", "--max-steps", 40)
    (pin,) = remote.read_pins(Bucket(url)).values()
    assert pin["generations"] == [first, fmt.read_manifest(more).generation]
    assert "new documents: 1 of the 1 added since the last session drawn in full" in said
    kept = {f"tokens/{n}" for n in fmt.read_manifest(dataset).files}
    assert kept <= keys(url), "the pinned generation keeps its files"


def test_train_with_a_bucket_that_cannot_be_read_ends_in_one_line(s3, tmp_path):
    for data, says in [("s3://no-such-bucket-here/data/web", "error: s3://no-such-bucket-here: no such bucket"),
                       (f"{s3}/nothing", f"error: {s3}/nothing: no dataset there (no manifest.json)"),
                       ("ftp://host/data", "error: ftp://host/data: unknown scheme 'ftp'")]:
        args = ["fit", "--data", data, "--out", str(tmp_path / "run"), "--max-steps", 1]
        result = CliRunner().invoke(train_cli, args)
        assert result.exit_code == 1 and result.stderr.strip().splitlines()[-1].startswith(says), result.output
