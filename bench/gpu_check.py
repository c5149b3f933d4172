"""The one-GPU check (`make bench BENCH=gpu`): the CUDA tests, then the speed table, well inside 8 minutes.

The tests are `pytest -m cuda`; the table, tokens/s and MFU of `gpt2` + AdamW and `llama-small` + Muon at
context 1024, bf16, compiled, against nanoGPT's own train.py on the same tokens (`--nanogpt DIR`), printed last
and written to bench/results/gpu_check.md. What the machine needs, and `--smoke` (the same script on a CPU,
tiny shapes): docs/benchmarks.md, The one-GPU check.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "bench", "results")
RECIPES = (("gpt2", "adamw"), ("llama-small", "muon"))
BATCHES = (64, 32, 16, 8)


def run(args, timeout, env=None):
    """(exit status, stdout + stderr) of a command in the repository, killed after `timeout` seconds."""
    try:
        done = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONPATH": REPO, **(env or {})})
        return done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        return 124, f"timed out after {timeout} s\n{e.stdout or ''}{e.stderr or ''}"


def largest_batch(preset, device):
    """The largest of BATCHES whose step the memory estimate (the one runs are refused by) admits."""
    import torch

    from train.memory import available_bytes, step_bytes
    from train.models import FAMILIES, PRESETS

    family = FAMILIES[PRESETS[preset]["family"]]
    config = family.SHAPE(vocab_size=50257, **family.SHAPES[preset])
    room = available_bytes(torch.device(device))
    return next((b for b in BATCHES if sum(step_bytes(config, b, "bf16", device)) < 0.9 * room), BATCHES[-1])


def ours(data, preset, optimizer, batch, steps, device, smoke):
    """(tokens/s, MFU or None, batch) of `python -m train fit`: the median over the steps after compilation."""
    out = tempfile.mkdtemp(prefix="gpu-check-")
    shape = ["--n-layer", 1, "--n-head", 2, "--n-embd", 64, "--context", 64] if smoke else []
    args = [sys.executable, "-m", "train", "fit", "--data", data, "--out", os.path.join(out, "run"), "--model", preset,
            "--optimizer", optimizer, "--batch-size", batch, "--max-steps", steps, "--eval-every", 0, "--ckpt-every", 0,
            "--no-samples", "--device", device, *shape,
            *(["--dtype", "fp32", "--no-compile"] if smoke else ["--dtype", "bf16", "--compile"])]
    status, output = run([str(a) for a in args], timeout=150)
    try:
        if status:
            raise RuntimeError(output.strip().splitlines()[-1] if output.strip() else f"exit {status}")
        with open(os.path.join(out, "run", "metrics.jsonl")) as f:
            lines = [json.loads(line) for line in f][steps // 3 :]  # compilation and warm-up left out
        mfu = statistics.median(m["mfu"] for m in lines) if "mfu" in lines[0] else None
        return statistics.median(m["tokens_per_sec"] for m in lines), mfu
    finally:
        shutil.rmtree(out, ignore_errors=True)


def nanogpt(nanogpt_dir, data, steps, device, smoke):
    """(tokens/s, MFU) of nanoGPT's train.py at its gpt2 124M shape (12 x 1024 tokens per iteration, no
    accumulation), on our tokens written to its data/gptmill/{train,val}.bin."""
    from prepare import format as fmt

    manifest = fmt.read_manifest(data)
    folder = os.path.join(nanogpt_dir, "data", "gptmill")
    os.makedirs(folder, exist_ok=True)
    for split in ("train", "val"):
        with open(os.path.join(folder, f"{split}.bin"), "wb") as out:
            for extent in manifest.extents[split]:
                tokens = np.memmap(fmt.token_path(data, extent.file), dtype=manifest.dtype, mode="r")
                out.write(np.asarray(tokens[extent.start : extent.end], dtype=np.uint16).tobytes())
    shape = ["--n_layer=1", "--n_head=2", "--n_embd=64", "--block_size=64"] if smoke else []
    args = [sys.executable, "train.py", "--dataset=gptmill", "--batch_size=12", "--gradient_accumulation_steps=1",
            f"--max_iters={steps}", "--eval_interval=100000", "--eval_iters=1", "--log_interval=1",
            "--always_save_checkpoint=False", f"--device={device}", f"--compile={not smoke}",
            f"--dtype={'float32' if smoke else 'bfloat16'}", f"--out_dir={tempfile.mkdtemp()}", *shape]
    try:
        done = subprocess.run(args, cwd=nanogpt_dir, capture_output=True, text=True, timeout=150)
    except subprocess.TimeoutExpired:
        raise RuntimeError("nanoGPT timed out after 150 s") from None
    logged = re.findall(r"iter \d+: loss [\d.]+, time ([\d.]+)ms, mfu (-?[\d.]+)%", done.stdout)
    iters = [(float(ms), float(mfu)) for ms, mfu in logged]
    if done.returncode or len(iters) < 3:
        raise RuntimeError((done.stdout + done.stderr).strip().splitlines()[-1])
    iters = iters[len(iters) // 3 :]
    tokens = 12 * (64 if smoke else 1024)
    mfus = [mfu / 100 for _, mfu in iters if mfu > 0]  # nanoGPT prints -100% until its fifth iteration, and on a CPU
    return tokens / (statistics.median(ms for ms, _ in iters) / 1000), statistics.median(mfus) if mfus else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join(REPO, "data", "stdlib"),
                        help="a prepared dataset of the gpt2 vocabulary")
    parser.add_argument("--nanogpt", help="a checkout of karpathy/nanoGPT, for the anchor row")
    parser.add_argument("--steps", type=int, default=30, help="steps per speed row")
    parser.add_argument("--smoke", action="store_true", help="on the CPU, tiny shapes: proves the script without a GPU")
    args = parser.parse_args()
    device = "cpu" if args.smoke else "cuda"
    start = time.perf_counter()
    rows, notes = [], []

    if args.smoke:
        notes.append("pytest -m cuda: not run (--smoke, no GPU)")
    else:
        status, output = run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py"], timeout=240)
        notes.append(f"pytest -m cuda: {(output.strip().splitlines() or ['no output'])[-1]} (exit {status})")
        print(output[-4000:], flush=True)

    for preset, optimizer in RECIPES:
        batch = 4 if args.smoke else largest_batch(preset, device)
        try:
            tokens_per_sec, mfu = ours(args.data, preset, optimizer, batch, args.steps, device, args.smoke)
            rows.append((f"gptmill {preset} + {optimizer}", batch, tokens_per_sec, mfu))
        except RuntimeError as e:
            notes.append(f"gptmill {preset} + {optimizer} at batch {batch}: failed: {e}")
        print(f"{time.perf_counter() - start:.0f} s: {preset} done", flush=True)
    if args.nanogpt:
        try:
            tokens_per_sec, mfu = nanogpt(args.nanogpt, args.data, args.steps, device, args.smoke)
            rows.append(("nanoGPT train.py gpt2 124M (anchor)", 12, tokens_per_sec, mfu))
        except RuntimeError as e:
            notes.append(f"nanoGPT: failed: {e}")
    else:
        notes.append("nanoGPT anchor: not run (no --nanogpt DIR)")

    import torch

    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (--smoke)"
    table = [f"# GPU check: {name}, torch {torch.__version__}, context {64 if args.smoke else 1024}, "
             f"{'fp32 eager' if args.smoke else 'bf16 compiled'}, {time.perf_counter() - start:.0f} s", "",
             "| run | batch | tokens/s | MFU |", "|---|---|---|---|"]
    table += [f"| {what} | {batch} | {tps:,.0f} | {'' if mfu is None else f'{mfu:.1%}'} |"
              for what, batch, tps, mfu in rows]
    table += [""] + [f"- {note}" for note in notes]
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "gpu_check.md"), "w") as f:
        f.write("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
