"""Hugging Face models fetched once into huggingface_hub's cache (eval task files have their own cache:
prepare/evals/cache.py)."""

import os

from prepare.evals.cache import FetchError


def hub_model(name):
    """A local directory for the Hugging Face model `name`: a directory as it is, else a model id (`hf:ID`, or
    a bare ID when no such directory exists) downloaded into huggingface_hub's cache, as nanoGPT's
    init_from='gpt2' does."""
    if not name.startswith("hf:") and os.path.isdir(name):
        return name
    repo = name.removeprefix("hf:")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo, allow_patterns=["*.json", "*.safetensors", "*.txt"])
    except Exception as e:  # huggingface_hub raises a family of its own for a missing repo, no network, ...
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FetchError(f"{name}: no such directory, and the Hugging Face Hub did not give model {repo!r} "
                         f"({detail})") from None
