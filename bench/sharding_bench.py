"""Peak memory per process of DDP and of FSDP (--shard fsdp) on 1, 2 and 4 CPU processes under torchrun (gloo).

The model is one whose states dominate (a wide Llama on a short context, batch 1): its fp32 weights, gradients
and AdamW's two moments are 16 bytes a parameter, and each FSDP process should hold about 1/N of them where a
DDP process holds them all (plus DDP's gradient buckets). `python bench/sharding_bench.py` prints, per layout and
process count: the states a process holds (exact, from its tensors) and the peak RSS of its steps above the RSS
it had before building the model (the largest over processes), twice: with glibc set as `train` sets it
(train/device.py: freed blocks kept for reuse, except in a sharded run on CPU, which returns them), and with
every block of 128 KiB or more mapped on its own and returned when freed, so that RSS follows the memory live
at each moment.
SHARDING_BENCH_WIDTH / _LAYERS change the model.
"""

import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import types

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WIDTH = int(os.environ.get("SHARDING_BENCH_WIDTH", 768))
LAYERS = int(os.environ.get("SHARDING_BENCH_LAYERS", 8))
STEPS = 2


def rss_bytes():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def local_bytes(tensor):
    tensor = tensor.to_local() if hasattr(tensor, "to_local") else tensor
    return tensor.numel() * tensor.element_size()


def worker(layout, allocator):
    """One process's steps; its figures written to SHARDING_BENCH_OUT/RANK.json."""
    import torch
    import torch.distributed as dist

    from train.device import keep_freed_memory
    from train.models import build_model
    from train.models.llama_family import LlamaConfig
    from train.sharding import sharded_model

    if allocator == "kept":
        keep_freed_memory()
    dist.init_process_group("gloo")
    shape = LlamaConfig(vocab_size=512, context=32, n_layer=LAYERS, n_head=WIDTH // 64, n_embd=WIDTH)
    before = rss_bytes()
    torch.manual_seed(0)
    if layout == "fsdp":
        with torch.device("meta"):
            model = build_model(shape)
        config = types.SimpleNamespace(family="llama", dtype="fp32", seed=0, compile=False)
        model = train_model = sharded_model(model, config, torch.device("cpu"))
    else:
        model = build_model(shape)
        train_model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x = torch.randint(0, 512, (1, shape.context))
    for _ in range(STEPS):
        _, loss = train_model(x, x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)  # gradients kept: the states of a step in flight
    states = sum(local_bytes(p) * 2 for p in model.parameters())  # weights and gradients
    states += sum(local_bytes(t) for s in optimizer.state.values() for t in s.values() if t.dim())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    params = sum(p.numel() for p in model.parameters())  # a DTensor's numel is its whole tensor's
    with open(os.path.join(os.environ["SHARDING_BENCH_OUT"], f"{dist.get_rank()}.json"), "w") as f:
        json.dump({"states": states, "peak": peak - before, "params": params}, f)
    dist.destroy_process_group()


def measure(layout, processes, allocator):
    """Each process's figures."""
    figures = tempfile.mkdtemp()
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1", "SHARDING_BENCH_OUT": figures}
    if allocator == "returned":
        env["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)  # fixed, so glibc does not raise it as blocks are freed
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                          str(processes), __file__, "--worker", layout, allocator], cwd=REPO, env=env, text=True,
                         capture_output=True)
    if out.returncode:
        sys.exit(f"{layout} on {processes} processes failed: {out.stderr[-2000:]}")
    ranks = []
    for rank in range(processes):
        with open(os.path.join(figures, f"{rank}.json")) as f:
            ranks.append(json.load(f))
    shutil.rmtree(figures)
    return ranks


def main():
    mib = lambda n: f"{n / 2**20:,.0f}"  # noqa: E731
    print("| layout | processes | states per process (MiB) | peak RSS above start, largest process (MiB), as "
          "`train` runs | the same, freed memory returned |")
    print("|---|---|---|---|---|")
    params = None
    for layout in ("ddp", "fsdp"):
        for processes in (1, 2, 4):
            kept, returned = (measure(layout, processes, allocator) for allocator in ("kept", "returned"))
            params = params or max(r["params"] for r in kept)
            print(f"| {layout} | {processes} | {mib(max(r['states'] for r in kept))} | "
                  f"{mib(max(r['peak'] for r in kept))} | {mib(max(r['peak'] for r in returned))} |", flush=True)
    print(f"\n{params / 1e6:.1f}M parameters (Llama, {LAYERS} layers x {WIDTH}), fp32 AdamW, {STEPS} steps of 1 x 32 "
          f"tokens")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(*sys.argv[2:4])
    else:
        main()
