"""Checkpoints: `checkpoints/step-NNNNNNN/` holding model.safetensors, state.pt and config.json, and a pointer.

A checkpoint directory is self-contained (sample, eval, export and resume need nothing else) and loading it
never runs code (state.pt is plain tensors and values); it is written under a temporary name, fsynced and
renamed before `checkpoints.json` names it, and only the latest and the best are kept (docs/training.md).
"""

import json
import os
import pickle
import re
import shutil

import torch
from safetensors.torch import load_file, save_model

from prepare.format import TOKENIZER, free_bytes, fsync_dir, is_disk_full, write_atomic
from prepare.tokenizer import open_encoding
from train.config import CONFIG, read_config
from train.models import build_model, model_config

POINTER = "checkpoints.json"
FOLDER = "checkpoints"
SHARDS = "shards"  # a sharded checkpoint's weights and optimizer state, one file per process (train/sharding.py)
COOLDOWNS, COOLED = "cooldowns", "cooled.json"  # cool-down branches (train/cooldown.py), and the latest one


class CheckpointError(Exception):
    pass


def read_pointer(run_dir):
    path = os.path.join(run_dir, POINTER)
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            pointer = json.load(f)
    except (OSError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: unreadable ({e}); it names the run's latest and best checkpoints: restore it, "
                              f"or write {{\"latest\": \"step-NNNNNNN\"}} naming a folder of "
                              f"{os.path.join(run_dir, FOLDER)}") from None
    if not isinstance(pointer, dict):
        raise CheckpointError(f"{path}: not a checkpoint pointer")
    for which in ("latest", "best"):
        name = pointer.get(which)
        if name is not None and not (isinstance(name, str) and re.fullmatch(r"step-\d+", name)):
            raise CheckpointError(f"{path}: its {which} checkpoint {name!r} is not the name of a folder of "
                                  f"{os.path.join(run_dir, FOLDER)} (step-NNNNNNN); restore it")
    return pointer


def save(run_dir, model, state, config_json, val_loss, generations=None):
    """Write a checkpoint of `model`, `state` and the run configuration at state['step']; it becomes latest,
    and best if `val_loss` is below every earlier checkpoint's on the same `generations` of the datasets (a
    run that follows its data is evaluated on each generation's val split: the first of a new one is best)."""
    name, final, tmp = step_folders(run_dir, state["step"])
    if read_pointer(run_dir).get("latest") == name:
        return
    shutil.rmtree(tmp, ignore_errors=True)
    publish(run_dir, state, config_json, val_loss, generations, whole_weights(model),
            lambda: tensor_bytes(model.state_dict()) + tensor_bytes(state))


def whole_weights(model):
    """What writes `model`'s weights into a checkpoint folder, whole (write_folder's `write_weights`)."""
    return lambda folder: save_model(model, os.path.join(folder, "model.safetensors"))


def step_folders(run_dir, step):
    """(name, final path, temporary path) of the checkpoint at `step`."""
    name = f"step-{step:07d}"
    final = os.path.join(run_dir, FOLDER, name)
    return name, final, final + ".tmp"


def publish(run_dir, state, config_json, val_loss, generations, write_weights, needed):
    """Complete the checkpoint's temporary folder (`write_weights(folder)` writes the weights, if they are not
    there already), fsync it, rename it to its final name and point at it; `needed()`: its bytes, for the
    message of a full disk."""
    pointer = read_pointer(run_dir)
    folder = os.path.join(run_dir, FOLDER)
    name, final, tmp = step_folders(run_dir, state["step"])
    shutil.rmtree(final, ignore_errors=True)  # an unpublished leftover of a crash, never one the pointer names
    try:
        write_folder(tmp, write_weights, state, config_json, os.path.join(run_dir, TOKENIZER))
    except Exception as e:  # torch.save and safetensors report a full disk in exceptions of their own
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(e, folder, needed()):
            raise CheckpointError(f"{folder}: no space left on device for checkpoint {name} (it needs about "
                                  f"{needed() / 1e6:,.0f} MB, {free_bytes(folder) / 1e6:,.0f} MB are free); the "
                                  f"checkpoints before it are intact: free some space and continue with "
                                  f"--resume") from None
        raise
    os.rename(tmp, final)
    fsync_dir(folder)

    pointer["latest"] = name
    same = pointer.get("best_generations", generations) == generations
    if val_loss is not None and (val_loss < pointer.get("best_val_loss", float("inf")) or not same):
        pointer.update(best=name, best_val_loss=val_loss, best_generations=generations)
    write_atomic(os.path.join(run_dir, POINTER), json.dumps(pointer, indent=1).encode())
    keep = {pointer.get("latest"), pointer.get("best")}
    for old in os.listdir(folder):
        if old not in keep:
            shutil.rmtree(os.path.join(folder, old), ignore_errors=True)


def tensor_bytes(values):
    """Bytes of the tensors in a (nested) state dict, each storage counted once (tied weights are saved once)."""
    storages = {}

    def visit(value):
        if torch.is_tensor(value):
            storages[(value.untyped_storage().data_ptr(), value.device)] = value.numel() * value.element_size()
        elif isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)

    visit(values)
    return sum(storages.values())


def read_cooled(run_dir):
    """{"branch": its directory under the run, "from": the main-line step, "steps": N} of a run's latest
    cool-down (`train cooldown`), or None."""
    path = os.path.join(run_dir, COOLED)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable ({e}); it names the run's latest cool-down under "
                              f"{os.path.join(run_dir, COOLDOWNS)}") from None


def write_folder(folder, write_weights, state, config_json, tokenizer_dir):
    """A complete checkpoint in `folder` (with a copy of the run's trained tokenizer, if it has one), every
    file and the folder itself fsynced."""
    os.makedirs(folder, exist_ok=True)
    write_weights(folder)
    torch.save(state, os.path.join(folder, "state.pt"))
    with open(os.path.join(folder, CONFIG), "w") as f:
        f.write(config_json)
    if os.path.isdir(tokenizer_dir):
        shutil.copytree(tokenizer_dir, os.path.join(folder, TOKENIZER))
    for root, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(root, name), "rb+") as f:
                os.fsync(f.fileno())
        fsync_dir(root)


def is_checkpoint(path):
    weights = os.path.join(path, "model.safetensors"), os.path.join(path, SHARDS, ".metadata")
    return any(map(os.path.exists, weights)) and os.path.exists(os.path.join(path, CONFIG))


def locate(run_dir, which="latest"):
    """The directory of a run's latest or best checkpoint, or ("cooled") the end of its latest cool-down branch
    (its best without one); a checkpoint directory stands for itself."""
    if is_checkpoint(run_dir):
        return str(run_dir)
    if not os.path.isdir(run_dir):
        raise CheckpointError(f"{run_dir}: no such run directory")
    if which == "cooled":
        cooled = read_cooled(run_dir)
        if cooled:
            return locate(os.path.join(run_dir, cooled["branch"]), "latest")
        which = "best"
    pointer = read_pointer(run_dir)
    name = pointer.get(which) or pointer.get("latest")
    if not name:
        raise CheckpointError(f"{run_dir}: no checkpoint yet")
    return os.path.join(run_dir, FOLDER, name)


def load(folder):
    """(weights, state) of a checkpoint directory, whole on this process (a sharded one's gathered from its
    shards: train/sharding.py); refuses anything but plain tensors and values."""
    state = load_state(folder)
    return weights_of(folder, state), state


def weights_of(folder, state):
    """The weights of the checkpoint in `folder` whose state is `state`, whole on this process."""
    if "sharding" in state:
        from train.sharding import read_weights

        return read_weights(folder, state)
    try:
        return load_file(os.path.join(folder, "model.safetensors"))
    except Exception as e:  # safetensors raises SafetensorError, OSError, ...
        raise CheckpointError(f"{folder}/model.safetensors: unreadable ({e})") from None


def load_state(folder):
    """The state of a checkpoint directory (step, optimizer, RNG...), without its weights."""
    path = os.path.join(folder, "state.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, EOFError) as e:
        raise CheckpointError(f"{path}: refused, it is not a plain checkpoint (it may carry code): "
                              f"{str(e).splitlines()[0]}") from None
    except OSError as e:
        raise CheckpointError(f"{path}: unreadable ({e})") from None
    return state


def load_weights(model, weights, source):
    """Copy `weights` into `model`, with a clear message when shapes or names differ."""
    expected = model.state_dict()
    weights = dict(weights)
    shared = {}
    for name, tensor in expected.items():
        shared.setdefault(tensor.data_ptr(), []).append(name)
    for names in shared.values():  # tied weights are stored once, under either name
        stored = [n for n in names if n in weights]
        for name in names if stored else []:
            weights.setdefault(name, weights[stored[0]])
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = [k for k in expected if k in weights and weights[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        detail = (
            f"missing {missing[:3]}" if missing
            else f"unexpected {unexpected[:3]}" if unexpected
            else f"{wrong[0]} is {tuple(weights[wrong[0]].shape)} in the checkpoint, "
                 f"{tuple(expected[wrong[0]].shape)} in the model"
        )
        raise CheckpointError(f"{source}: does not fit this model ({detail})")
    model.load_state_dict(weights)


def load_encoding(path, which, config):
    """The tokenizer of a run's latest or best checkpoint (or of a checkpoint directory)."""
    return open_encoding(config.tokenizer, os.path.join(locate(path, which), TOKENIZER))


def load_model(path, which, device):
    """(model, run config) of a run's latest or best checkpoint, or of a checkpoint directory, on `device`,
    in eval mode."""
    folder = locate(path, which)
    config, _ = read_config(folder)
    weights, _ = load(folder)
    model = build_model(model_config(config, dropout=0.0))
    load_weights(model, weights, folder)
    return model.to(device).eval(), config
