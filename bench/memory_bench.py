"""Peak memory and time of one `gpt2` training step on CPU at several batch sizes, each in a fresh process.

The chunked loss keeps at most GRAD_WEIGHT_ROWS rows of logit gradients, so its memory does not grow with
the batch; activations do. `python bench/memory_bench.py` prints, per batch size: peak RSS, seconds per step
(the second of two), and the estimate `train/memory.py` refuses runs by. Run with PYTHONPATH pointing at
another checkout to compare versions.
"""

import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BATCHES = [int(b) for b in os.environ.get("MEMORY_BATCHES", "4 16").split()]


def one_step(batch):
    import torch

    from train.device import keep_freed_memory
    from train.models.gpt2 import GPT
    from train.models.gpt2_family import SHAPES, GPTConfig

    keep_freed_memory()
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=50257, **SHAPES["gpt2"])
    model = GPT(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x = torch.randint(0, 50257, (batch, config.context))
    times = []
    for _ in range(2):
        start = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16):
            _, loss = model(x, x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    try:
        from train.memory import step_bytes

        estimate = sum(step_bytes(config, batch, "bf16", "cpu"))
    except ImportError:  # an older checkout
        estimate = None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"batch": batch, "peak_rss": peak, "seconds": times[-1], "estimate": estimate}


def main():
    for batch in BATCHES:
        out = subprocess.run([sys.executable, __file__, str(batch)], capture_output=True, text=True, env=os.environ)
        if out.returncode:
            why = out.stderr.strip().splitlines()[-1] if out.stderr else out.returncode
            print(f"gpt2 batch {batch}: failed ({why})")
            continue
        r = json.loads(out.stdout.splitlines()[-1])
        estimate = f", estimate {r['estimate'] / 2**30:.1f} GiB" if r["estimate"] else ""
        print(f"gpt2 batch {batch:2d} x 1024: peak RSS {r['peak_rss'] / 2**30:5.2f} GiB, {r['seconds']:6.1f} s per "
              f"step, {batch * 1024 / r['seconds']:5.0f} tokens/s{estimate}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 2:
        print(json.dumps(one_step(int(sys.argv[1]))))
    else:
        main()
