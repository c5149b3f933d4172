"""Object storage: clients compared, and push, pull and training's first epoch against the same dataset on
local disk, on a real S3 server on this machine (moto's server mode, as the tests use; it is Python, and on 2
shared cores its speed bounds every figure).

    python bench/storage_bench.py [--files 8] [--mb 32] [--rounds 3] [--parts clients,dataset]

Clients: each uploads then downloads the same files, 8 at a time, in its own process (s3fs pins a botocore
of its own: give its install as S3FS_PATH=DIR, e.g. `pip install --target DIR s3fs`; without it, s3fs is
left out). Rounds interleave the clients, so that the load of a shared machine falls on all of them alike.
Dataset: 400 files of CPython's standard library in a vocabulary of 1,024 ids learned from them, in token
files of 200,000 tokens; a copy on local disk against `prepare push` and `prepare pull`, each then repeated
with nothing to move; then one epoch of a tiny model's training from the local copy, from the bucket with an
empty cache and again with the cache filled, and the time its steps waited for data (`data_wait_sec`, summed).
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
from s3_server import S3Server  # noqa: E402

CONCURRENCY = 8


def obstore_run(op, bucket, endpoint, paths):
    import concurrent.futures
    import pathlib

    import obstore
    from obstore.store import S3Store

    store = S3Store(bucket, endpoint=endpoint, client_options={"allow_http": True}, region="us-east-1")
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        if op == "upload":
            put = lambda p: obstore.put(store, os.path.basename(p), pathlib.Path(p), chunk_size=16 << 20)  # noqa: E731
            list(pool.map(put, paths))
        else:
            def get(p):
                with open(p, "wb") as out:
                    for chunk in obstore.get(store, os.path.basename(p)).stream(min_chunk_size=8 << 20):
                        out.write(chunk)
            list(pool.map(get, paths))
    return time.perf_counter() - start


def boto3_run(op, bucket, endpoint, paths):
    import concurrent.futures

    import boto3
    from boto3.s3.transfer import TransferConfig

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    config = TransferConfig(multipart_chunksize=16 << 20, max_concurrency=1)  # files in parallel, as the others
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY) as pool:
        if op == "upload":
            list(pool.map(lambda p: client.upload_file(p, bucket, os.path.basename(p), Config=config), paths))
        else:
            list(pool.map(lambda p: client.download_file(bucket, os.path.basename(p), p, Config=config), paths))
    return time.perf_counter() - start


def s3fs_run(op, bucket, endpoint, paths):
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=endpoint, max_concurrency=1)
    remote = [f"{bucket}/{os.path.basename(p)}" for p in paths]
    start = time.perf_counter()
    if op == "upload":
        fs.put(paths, remote, batch_size=CONCURRENCY)
    else:
        fs.get(remote, paths, batch_size=CONCURRENCY)
    return time.perf_counter() - start


CLIENTS = {"obstore": obstore_run, "boto3": boto3_run, "s3fs": s3fs_run}


def timed(client, op, bucket, server, paths):
    """Seconds `client` takes to `op` the files, in a process of its own (its imports and set-up not counted)."""
    env = {**os.environ, **server.env()}
    if client == "s3fs":
        env["PYTHONPATH"] = os.environ["S3FS_PATH"]
    out = subprocess.run([sys.executable, __file__, "--worker", client, op, bucket, server.endpoint, *paths], env=env,
                         check=True, capture_output=True, text=True).stdout
    return float(out.split()[-1])


def compare_clients(server, args, work):
    clients = ["obstore", "boto3"] + (["s3fs"] if os.environ.get("S3FS_PATH") else [])
    paths = []
    for i in range(args.files):
        paths.append(os.path.join(work, f"f{i}.bin"))
        with open(paths[-1], "wb") as f:
            f.write(os.urandom(args.mb << 20))
    digests = [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths]
    total = args.files * args.mb * (1 << 20) / 1e6
    times = {(c, op): [] for c in clients for op in ("upload", "download")}
    for _ in range(args.rounds):
        for client in clients:
            bucket = server.new_bucket()
            times[client, "upload"].append(timed(client, "upload", bucket, server, paths))
            got = [os.path.join(work, "got", os.path.basename(p)) for p in paths]
            os.makedirs(os.path.join(work, "got"), exist_ok=True)
            times[client, "download"].append(timed(client, "download", bucket, server, got))
            assert [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in got] == digests, client
    print(f"\n{args.files} files of {args.mb} MB, {CONCURRENCY} at a time, median of {args.rounds} interleaved rounds:")
    print("| client | upload MB/s | download MB/s |\n|---|---|---|")
    for client in clients:
        up, down = (sorted(times[client, op])[len(times[client, op]) // 2] for op in ("upload", "download"))
        print(f"| {client} | {total / up:.0f} | {total / down:.0f} |")


def prepare(*args, env=None):
    """Seconds `python -m prepare ARGS` takes, and its output."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "prepare", *map(str, args)], cwd=REPO, env=env, check=True,
                         capture_output=True, text=True).stdout
    return time.perf_counter() - start, out.strip()


def epoch(data, out, env, tokens):
    """(seconds, data wait in seconds, steps) of one epoch of a tiny model's steps over `tokens` train tokens."""
    batch, context = 64, 256
    steps = max(1, tokens // (batch * context))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "train", "fit", "--data", data, "--out", out, "--model", "tiny",
                    "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--context", str(context),
                    "--batch-size", str(batch), "--max-steps", str(steps), "--no-compile", "--device", "cpu",
                    "--no-samples", "--eval-every", "0"],
                   cwd=REPO, env=env, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    with open(os.path.join(out, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    return seconds, sum(m["data_wait_sec"] for m in lines), len(lines)


def compare_dataset(server, work):
    env = {**os.environ, **server.env(), "GPTMILL_CACHE_DIR": os.path.join(work, "cache")}
    from prepare.sources import stdlib_files

    data, url = os.path.join(work, "stdlib"), f"s3://{server.new_bucket()}/data/stdlib"
    files, vocabulary = stdlib_files()[:400], os.path.join(work, "vocabulary")
    prepare("tokenizer", *files, "--vocab-size", 1024, "--out", vocabulary, env=env)
    prepare("build", *files, "--out", data, "--encoding", vocabulary, "--shard-tokens", 200_000, env=env)
    manifest = json.load(open(os.path.join(data, "manifest.json")))
    size = sum(os.path.getsize(os.path.join(data, "tokens", f["name"])) for f in manifest["files"])
    start = time.perf_counter()
    shutil.copytree(data, os.path.join(work, "copy"))
    rows = [("copy to another local directory", time.perf_counter() - start)]
    rows.append(("prepare push (empty bucket)", prepare("push", data, url, env=env)[0]))
    rows.append(("prepare push (nothing new)", prepare("push", data, url, env=env)[0]))
    rows.append(("prepare pull (empty directory)", prepare("pull", url, os.path.join(work, "pulled"), env=env)[0]))
    rows.append(("prepare pull (nothing new)", prepare("pull", url, os.path.join(work, "pulled"), env=env)[0]))
    print(f"\nCPython's standard library, {manifest['tokens']['train']:,} train tokens in {len(manifest['files'])} "
          f"token files ({size / 1e6:.1f} MB), each command a process of its own:")
    print("| operation | seconds | MB/s |\n|---|---|---|")
    for name, seconds in rows:
        rate = "" if "nothing new" in name else f"{size / 1e6 / seconds:.0f}"
        print(f"| {name} | {seconds:.2f} | {rate} |")
    tokens = manifest["tokens"]["train"]
    print("\nOne epoch of a tiny model (1 layer, 32 wide, context 256, 64 windows a step) on the same data:")
    print("| data | steps | seconds | waited for data (s) |\n|---|---|---|---|")
    runs = (("local directory", data), ("bucket, empty cache", url), ("bucket, cache filled", url))
    for number, (name, source) in enumerate(runs):
        seconds, wait, steps = epoch(source, os.path.join(work, f"run-{number}"), env, tokens)
        print(f"| {name} | {steps} | {seconds:.1f} | {wait:.2f} |")


def main():
    if sys.argv[1:2] == ["--worker"]:
        client, op, bucket, endpoint, *paths = sys.argv[2:]
        print(CLIENTS[client](op, bucket, endpoint, paths))  # seconds of the transfer, after imports and set-up
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--mb", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parts", default="clients,dataset")
    args = parser.parse_args()
    start = time.perf_counter()
    server = S3Server()
    print(f"moto's S3 server answered after {time.perf_counter() - start:.1f} s")
    try:
        with tempfile.TemporaryDirectory() as work:
            if "clients" in args.parts:
                compare_clients(server, args, work)
            if "dataset" in args.parts:
                compare_dataset(server, work)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
