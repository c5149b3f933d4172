"""Several processes under torchrun: who this process is, its device, and the few collectives the loop needs.

Without torchrun (no RANK/WORLD_SIZE in the environment) the world is one process and every collective
returns its input: the training loop is the same code either way. Backend nccl on CUDA, gloo on CPU.
"""

import dataclasses
import datetime
import os
import signal

import torch
import torch.distributed as dist

from train.device import DeviceError, pick_device


class JobError(Exception):
    """An error every process of the job raises alike, after agreeing on it: rank 0 alone reports it."""


@dataclasses.dataclass
class World:
    rank: int
    size: int
    device: torch.device
    # The loop's own collectives (losses, decisions, RNG states) go through a gloo group of their own, never
    # the group DDP reduces gradients on: the two kinds of message must not interleave on one connection.
    control: object = None

    @property
    def is_main(self):
        """Rank 0 writes every file of the run: config, metrics, samples, plots, trackers, checkpoints."""
        return self.rank == 0

    def sum(self, values):
        """Element-wise sum over processes of a list of floats, in float64 so that totals stay exact enough."""
        tensor = torch.tensor(values, dtype=torch.float64)
        if self.size > 1:
            dist.all_reduce(tensor, group=self.control)
        return tensor.tolist()

    def broadcast(self, value):
        """Rank 0's `value` (a picklable object), on every process."""
        if self.size == 1:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def gather(self, value):
        """Every process's `value`, in rank order (on every process)."""
        if self.size == 1:
            return [value]
        values = [None] * self.size
        dist.all_gather_object(values, value, group=self.control)
        return values

    def first_error(self, error):
        """The first process's error message of those given (None where a process has none), on every process:
        a collective, so that all stop together and with one message."""
        return next((e for e in self.gather(error) if e), None)

    def finish(self):
        """After a run every process completed: leave together, since a process that exits first resets the
        sockets another may still be reading. (After a failure a barrier could wait forever: torchrun stops
        the job instead.)"""
        if self.size > 1:
            dist.barrier(group=self.control)

    def close(self):
        if self.size > 1:
            dist.destroy_process_group()


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM asks the loop to stop after the current step and save."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def init_world(device_name, timeout_seconds):
    """This process's place in the job: torchrun's environment if present, else a world of one. A collective
    waits at most `timeout_seconds` for the other processes (rank 0 alone writes checkpoints, samples and
    plots while the others wait in the next one: a large checkpoint on slow storage needs a long timeout)."""
    size = int(os.environ.get("WORLD_SIZE", 1))
    if size == 1:
        return World(0, 1, pick_device(device_name))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0))
    device = pick_device(device_name)
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DeviceError(f"local rank {local_rank} has no GPU: this machine has {torch.cuda.device_count()}; "
                              f"give torchrun --nproc-per-node {torch.cuda.device_count()} or fewer")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif device.type == "mps":
        raise DeviceError("several processes on MPS are not supported; use one process, or --device cpu")
    # A rank that dies is noticed by torchrun, which stops the others; the timeout only bounds a hang.
    timeout = datetime.timedelta(seconds=timeout_seconds)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return World(rank, size, device, control=dist.new_group(backend="gloo", timeout=timeout))
