"""`--shard fsdp`: the model, its gradients and its optimizer state sharded over the processes with torch's FSDP2,
and the checkpoints that keep them sharded.

Each block is one unit of `fully_shard`, the root (embeddings, final norm, output layer) another, as torchtitan
shards Llama; a block's parameters are gathered for its forward and freed after it (ZeRO-3), which is what lets
a model larger than one device's memory train. The model is built on the meta device and materialised one
parameter at a time, each drawn whole from its own seeded generator (LanguageModel.initial_value) and cut to
this process's shard: the values are those of a model built whole on one process, so runs on any number of
processes log the same losses.

A sharded checkpoint is a torch.distributed.checkpoint (DCP) folder `shards/` in the step's checkpoint folder:
every process writes its own file, rank 0 the metadata, then rank 0 publishes the folder as train/checkpoint.py
publishes every checkpoint (temporary name, fsync, rename, pointer). DCP re-splits it for any number of
processes on load; one process reads it whole without a process group (sample, eval, score, export).
"""

import os
import shutil
import warnings

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from prepare.format import free_bytes, is_disk_full
from train import checkpoint
from train.checkpoint import SHARDS, CheckpointError
from train.device import return_freed_memory
from train.distributed import JobError

SHARDINGS = ("fsdp",)  # the layouts this version re-splits (DCP's, parameters cut along their first dimension)


class ShardingError(Exception):
    """The model cannot be sharded as asked; the message names the culprit."""


def sharded_model(model, config, device):
    """`model`, built on the meta device, wrapped by FSDP2 (each block, then the root) and materialised on
    `device` shard by shard. bf16 runs compute in bf16 parameters and reduce gradients in fp32; with --compile,
    the blocks are compiled (the trainer does not compile a sharded model again)."""
    blocks = model.blocks()
    if not blocks:
        raise ShardingError(f"--shard fsdp: the {config.family} model names no blocks to shard (a family's "
                            f"LanguageModel.blocks); train it with --shard none")
    if device.type == "cpu":
        return_freed_memory()
    bf16 = config.dtype == "bf16"
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None,
                                  reduce_dtype=torch.float32 if bf16 else None)
    for block in blocks:
        if config.compile:  # each block compiled in place (its names unchanged), then sharded, as torchtitan does
            block.compile()
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    model.to_empty(device=device)
    with torch.no_grad():
        for name, p in model.named_parameters():
            whole = model.initial_value(name, p.shape, config.seed).to(device)
            p.copy_(distribute_tensor(whole, p.device_mesh, p.placements, src_data_rank=None))
            del whole  # one parameter whole at a time, never the model
    model.reset_buffers()
    return model


def save(run_dir, world, model, optimizer, state, config_json, val_loss, generations):
    """A sharded checkpoint at state['step'] (a collective: every process writes its shards at once), then
    published by rank 0 as train/checkpoint.py publishes a whole one."""
    name, final, tmp = checkpoint.step_folders(run_dir, state["step"])
    if world.broadcast(checkpoint.read_pointer(run_dir).get("latest") == name if world.is_main else None):
        return
    if world.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
    world.broadcast(None)  # nobody writes into the folder before it is emptied
    model_state, optimizer_state = get_state_dict(model, optimizer)
    try:
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=os.path.join(tmp, SHARDS))
    except dcp.CheckpointException as e:  # every process's failure gathered, raised on every process
        refuse_full_disk(world, e, name, tmp, world.size * local_bytes([model_state, optimizer_state]))
        raise
    if world.is_main:  # DCP's save returns on rank 0 once every process's file and the metadata are written
        state = {**state, "sharding": {"kind": "fsdp", "world_size": world.size}}
        shards = sum(f.stat().st_size for f in os.scandir(os.path.join(tmp, SHARDS)))
        checkpoint.publish(run_dir, state, config_json, val_loss, generations, lambda folder: None,
                           lambda: shards + checkpoint.tensor_bytes(state))


def local_bytes(values):
    """Bytes of this process's shards of the tensors in a (nested) state dict."""
    if isinstance(values, dict):
        return sum(local_bytes(v) for v in values.values())
    if isinstance(values, (list, tuple)):
        return sum(local_bytes(v) for v in values)
    if isinstance(values, DTensor):
        values = values.to_local()
    return values.numel() * values.element_size() if torch.is_tensor(values) else 0


def refuse_full_disk(world, error, name, tmp, needed):
    """After a failed sharded save: its partial files removed, and, if the disk is full (rank 0 decides), one
    message for the job; the checkpoints before it are intact."""
    folder = os.path.dirname(tmp)
    if world.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
    if world.broadcast(is_disk_full(error, folder, needed) if world.is_main else None):
        raise JobError(f"{folder}: no space left on device for checkpoint {name} (it needs about {needed / 1e6:,.0f} "
                       f"MB, {free_bytes(folder) / 1e6:,.0f} MB are free); the checkpoints before it are intact: free "
                       f"some space and continue with --resume") from None


def shard_files(folder, state):
    """The DCP folder of a sharded checkpoint, its metadata read and every file it names checked present."""
    sharding = state["sharding"]
    if sharding.get("kind") not in SHARDINGS:
        raise CheckpointError(f"{folder}: sharded as {sharding.get('kind')!r} over {sharding.get('world_size')} "
                              f"processes, which this version cannot re-split (it reads {', '.join(SHARDINGS)})")
    path = os.path.join(folder, SHARDS)
    try:
        metadata = FileSystemReader(path).read_metadata()
    except (OSError, ValueError, EOFError) as e:
        raise CheckpointError(f"{path}/.metadata: unreadable ({e})") from None
    files = sorted({item.relative_path for item in metadata.storage_data.values()})
    missing = [f for f in files if not os.path.exists(os.path.join(path, f))]
    if missing:
        raise CheckpointError(f"{path}/{missing[0]}: missing; the checkpoint was written by "
                              f"{sharding['world_size']} processes into {len(files)} files and needs every one: "
                              f"restore it, or resume from another checkpoint")
    return path, metadata


def read_weights(folder, state):
    """The weights of a sharded checkpoint, whole, read on one process without a process group."""
    path, metadata = shard_files(folder, state)
    weights = {key.removeprefix("model."): torch.empty(item.size, dtype=item.properties.dtype)
               for key, item in metadata.state_dict_metadata.items()
               if key.startswith("model.") and isinstance(item, TensorStorageMetadata)}
    load_shards({"model": weights}, path)
    return weights


def load_shards(state_dict, path):
    """DCP's load into `state_dict`; on one process without a process group, without DCP's warning that it
    assumes so (it is what is meant)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.distributed is disabled")
        dcp.load(state_dict, checkpoint_id=path, no_dist=not dist.is_initialized())


def restore(folder, state, model, optimizer):
    """Weights and optimizer state of a checkpoint into `model` and `optimizer` (sharded or whole, on any number
    of processes): a sharded checkpoint re-split by DCP, a whole one's tensors cut to each process's shards."""
    if "sharding" in state:
        path, _ = shard_files(folder, state)
        model_state, optimizer_state = get_state_dict(model, optimizer)
        saved = {"model": model_state, "optimizer": optimizer_state}
        load_shards(saved, path)
        set_state_dict(model, optimizer, model_state_dict=saved["model"], optim_state_dict=saved["optimizer"])
        return
    weights = checkpoint.weights_of(folder, state)
    names = {id(p): name for name, p in model.named_parameters()}
    saved = state["optimizer"]
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    by_name = {"state": {order[i]: values for i, values in saved["state"].items()},
               "param_groups": [{**group, "params": [order[i] for i in group["params"]]}
                                for group in saved["param_groups"]]}
    set_state_dict(model, optimizer, model_state_dict=weights, optim_state_dict=by_name,
                   options=StateDictOptions(full_state_dict=True, strict=False))
