"""Hugging Face GPT-2 format: export a run so `transformers` loads it offline, and import such a directory.

GPT2LMHeadModel stores its Linear layers as Conv1D, i.e. transposed, and the vocabulary unpadded.
The tokenizer files are GPT-2's own BPE files (the ones prepare verifies), renamed as transformers expects.
"""

import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file

from prepare.tokenizer import ENDOFTEXT, gpt2_files
from train.checkpoint import CheckpointError, load_weights

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def export(model, config, out_dir):
    """Write config.json, model.safetensors and the GPT-2 tokenizer files of `model` to `out_dir`."""
    if not config.bias:
        raise CheckpointError("GPT-2 in transformers always has biases; a model trained with --no-bias cannot be exported")
    if config.tokenizer["name"] != "gpt2":
        raise CheckpointError(f"only gpt2-tokenized models can be exported with GPT-2 tokenizer files, this one uses {config.tokenizer['name']}")
    vocab = config.tokenizer["vocab_size"]
    tensors = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied to transformer.wte.weight
        if name == "transformer.wte.weight":
            tensor = tensor[:vocab]  # drop the padding rows
        if name.endswith(CONV1D):
            tensor = tensor.t()
        tensors[name] = tensor.detach().to("cpu", torch.float32).contiguous()
    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    hf_config = {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": vocab,
        "n_positions": config.context, "n_ctx": config.context, "n_embd": config.n_embd, "n_layer": config.n_layer,
        "n_head": config.n_head, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
        "resid_pdrop": config.dropout, "embd_pdrop": config.dropout, "attn_pdrop": config.dropout,
        "bos_token_id": config.tokenizer["eot_token"], "eos_token_id": config.tokenizer["eot_token"],
        "tie_word_embeddings": True, "torch_dtype": "float32",
    }
    write_json(os.path.join(out_dir, "config.json"), hf_config)
    files = gpt2_files()
    shutil.copyfile(files["encoder.json"], os.path.join(out_dir, "vocab.json"))
    shutil.copyfile(files["vocab.bpe"], os.path.join(out_dir, "merges.txt"))
    write_json(os.path.join(out_dir, "tokenizer_config.json"), {
        "tokenizer_class": "GPT2Tokenizer", "model_max_length": config.context, "add_prefix_space": False,
        "bos_token": ENDOFTEXT, "eos_token": ENDOFTEXT, "unk_token": ENDOFTEXT,
    })
    write_json(os.path.join(out_dir, "special_tokens_map.json"), {"bos_token": ENDOFTEXT, "eos_token": ENDOFTEXT, "unk_token": ENDOFTEXT})


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)


def read_hf_config(hf_dir):
    """Our model shape from a Hugging Face GPT-2 directory's config.json."""
    path = os.path.join(hf_dir, "config.json")
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable Hugging Face config ({e})") from None
    if config.get("model_type") != "gpt2":
        raise CheckpointError(f"{path}: model_type {config.get('model_type')!r}; only GPT-2 models can be loaded")
    if config.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise CheckpointError(f"{path}: activation {config['activation_function']!r} is not the GPT-2 GELU this model uses")
    return {"n_layer": config["n_layer"], "n_head": config["n_head"], "n_embd": config["n_embd"],
            "context": config["n_positions"], "vocab_size": config["vocab_size"]}


def load_hf_weights(model, hf_dir):
    """Copy a Hugging Face GPT-2 checkpoint (model.safetensors) into `model`."""
    path = os.path.join(hf_dir, "model.safetensors")
    if not os.path.exists(path):
        raise CheckpointError(f"{hf_dir}: no model.safetensors (pickled pytorch_model.bin files are not loaded, they can carry code)")
    hf_vocab = read_hf_config(hf_dir)["vocab_size"]
    if hf_vocab != model.config.vocab_size:
        raise CheckpointError(f"{hf_dir}: vocabulary of {hf_vocab} tokens, the dataset's tokenizer has {model.config.vocab_size}")
    weights = {}
    for name, tensor in load_file(path).items():
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # causal-mask buffers of older transformers versions
        name = name if name.startswith(("transformer.", "lm_head.")) else "transformer." + name
        if name.endswith(CONV1D):
            tensor = tensor.t()
        if name in ("transformer.wte.weight", "lm_head.weight"):
            padded = model.transformer.wte.weight.detach().clone()  # keep the padding rows as initialised
            padded[: tensor.size(0)] = tensor
            tensor = padded
        weights[name] = tensor.contiguous()
    load_weights(model, weights, hf_dir)
