"""Pins: a training run that follows a dataset from generation to generation (train/history.py) pins each one
it trains on, so that it can replay itself and tell what each night added; gc and compaction keep what a
pinned generation names (its lease, manifest, token files and source segments) until `prepare unpin`."""

import json
import os

from prepare.format.durable import write_atomic
from prepare.format.layout import PINS, DatasetError, pin_path


def read_pins(data_dir):
    """name -> {"run": the run directory, "generations": [...]} of every pin of the dataset."""
    folder, pins = os.path.join(data_dir, PINS), {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if name.endswith(".json"):
            try:
                with open(os.path.join(folder, name)) as f:
                    pins[name[: -len(".json")]] = json.load(f)
            except (OSError, ValueError) as e:
                raise DatasetError(f"{os.path.join(folder, name)}: unreadable pin ({e}); `prepare unpin` removes "
                                   f"it") from None
    return pins


def pin(data_dir, name, run, generation):
    """Add `generation` to the pin `name` of the run in `run` (called while the run leases it, so that no gc
    in between can collect it)."""
    os.makedirs(os.path.join(data_dir, PINS), exist_ok=True)
    generations = read_pins(data_dir).get(name, {}).get("generations", [])
    if generation not in generations:
        pinned = {"run": run, "generations": sorted(generations + [generation])}
        write_atomic(pin_path(data_dir, name), json.dumps(pinned).encode())


def pinned_generations(data_dir):
    return {g for p in read_pins(data_dir).values() for g in p.get("generations", [])}
