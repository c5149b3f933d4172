"""`train sample`: a run's model continues prompts, the text written as it comes (train/generate.py decodes)."""

import codecs

import torch

from train.checkpoint import load_encoding, load_model
from train.config import ConfigError
from train.device import autocast, pick_device, pick_dtype
from train.generate import beam_search, is_text, prompt_ids, sample


def read_prompts(prompts, prompt_file):
    """The --prompt texts, then those of --prompt-file (separated by blank lines)."""
    prompts = list(prompts)
    if prompt_file:
        with open(prompt_file) as f:
            prompts += [p for p in f.read().split("\n\n") if p.strip()]
    if not prompts:
        raise ConfigError("no prompt; give --prompt TEXT or --prompt-file FILE")
    if any(not p.strip() for p in prompts):
        raise ConfigError("empty prompt; give some text to continue")
    return prompts


def continue_prompts(run_dir, prompts, *, which, max_new_tokens, num_samples, temperature, top_k, top_p, num_beams,
                     length_penalty, seed, device, dtype, cache, write, warn):
    """Each prompt continued `num_samples` times (beam search when `num_beams` > 1), the text given to `write`
    piece by piece as it is produced; `warn` says that a prompt longer than the context was cropped."""
    device = pick_device(device)
    dtype = pick_dtype(dtype, device)
    model, config = load_model(run_dir, which, device)
    encoding = load_encoding(run_dir, which, config)
    eot = config.tokenizer["eot_token"]
    generator = torch.Generator(device=device).manual_seed(seed)
    for number, prompt in enumerate(prompts, 1):
        ids = prompt_ids(encoding, prompt)
        if len(ids) > config.context:
            warn(f"warning: prompt of {len(ids)} tokens cropped to the last {config.context} (the context)")
            ids = ids[-config.context :]
        for index in range(num_samples):
            if num_samples > 1 or len(prompts) > 1:
                which_prompt = "" if len(prompts) == 1 else f"prompt {number}, "
                write(f"--- {which_prompt}sample {index + 1}\n")
            write(prompt)
            text = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a token can end mid-character
            with autocast(device, dtype):
                if num_beams > 1:
                    tokens = beam_search(model, ids, max_new_tokens, num_beams, length_penalty, eot, cache)
                else:
                    tokens = sample(model, ids, max_new_tokens, temperature, top_k, top_p, generator, eot, cache)
                for token in tokens:
                    if is_text(encoding, token):
                        write(text.decode(encoding.decode_single_token_bytes(token)))
            write(text.decode(b"", final=True) + "\n")
