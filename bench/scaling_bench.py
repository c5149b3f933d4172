"""CPU scaling of data-parallel training: 2 processes x 1 thread (torchrun, gloo) against 1 process x 2
threads, on the same global batch (`tiny`, 2 micro-batches of 8 windows per step), same dataset, same steps.

Figures are the median tokens/s over the steps after the first 5 (which carry warm-up), for the whole job.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile

from common import REPO, run_measured

STEPS = int(os.environ.get("SCALING_STEPS", 60))


def tokens_per_sec(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f]
    return statistics.median(m["tokens_per_sec"] for m in lines[5:])


def main():
    work = tempfile.mkdtemp(prefix="gptmill-scaling-")
    data = os.path.join(work, "stdlib")
    run_measured(["-m", "prepare", "build", "stdlib", "--out", data])
    args = ["-m", "train", "fit", "--data", data, "--model", "tiny", "--tokens-per-step", "2048",
            "--max-steps", str(STEPS), "--eval-every", "0", "--ckpt-every", "0", "--no-samples", "--device", "cpu"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    results = {}
    for name, launcher, threads in (("1 process x 2 threads", [sys.executable], "2"),
                                    ("2 processes x 1 thread", torchrun, "1")):
        out = os.path.join(work, name.split()[0])
        env = {**os.environ, "OMP_NUM_THREADS": threads, "PYTHONPATH": REPO}
        subprocess.run([*launcher, *args, "--out", out], cwd=REPO, env=env, check=True, capture_output=True)
        results[name] = tokens_per_sec(out)
    one, two = results.values()
    for name, value in results.items():
        print(f"tiny, 2,048 tokens per step, {name}: {value:,.0f} tokens/s")
    print(f"2 processes against 1 on 2 cores: {two / one:.2f}x")


if __name__ == "__main__":
    main()
