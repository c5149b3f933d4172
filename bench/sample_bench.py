"""Generation speed with and without the key/value cache: 256 new tokens, greedy, tiny and gpt2 shapes."""

import os
import time

import torch

from train.generate import sample
from train.models.gpt2 import GPT
from train.models.gpt2_family import SHAPES, GPTConfig

NEW_TOKENS = 256


def tokens_per_sec(model, use_cache):
    prompt = [50256, 464, 2068, 7586, 21831]
    list(sample(model, prompt, 4, temperature=0, use_cache=use_cache))  # warm-up
    start = time.perf_counter()
    out = list(sample(model, prompt, NEW_TOKENS, temperature=0, use_cache=use_cache))
    return len(out) / (time.perf_counter() - start), out


def main():
    torch.set_num_threads(os.cpu_count())
    for preset in ("tiny", "gpt2"):
        torch.manual_seed(0)
        config = GPTConfig(vocab_size=50257, **SHAPES[preset])
        model = GPT(config).eval()
        with torch.no_grad():
            cached, a = tokens_per_sec(model, True)
            uncached, b = tokens_per_sec(model, False)
        assert a == b, "cached and uncached greedy decoding must agree"
        print(f"{preset:5s} (context {config.context}): {cached:7.1f} tok/s with cache, {uncached:7.1f} without: "
              f"{cached / uncached:.1f}x")


if __name__ == "__main__":
    main()
