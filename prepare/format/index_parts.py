"""How an index part lies on disk (`index/<run>-0000.idx`, one immutable file each): 8 bytes giving the length
of a JSON header ({"inputs": ..., "arrays": {name: [dtype, shape, offset]}}), the header, then each array's raw
bytes at a 64-byte aligned offset, so that readers memory-map them and a lookup reads only the pages it touches.
Which arrays a part holds is the index's to say (prepare/dedup/index.py). Written under a temporary name,
fsynced and renamed, like a token file."""

import json
import os

import numpy as np

from prepare.format.durable import fsync_dir
from prepare.format.layout import INDEX, TMP_SUFFIX, DatasetError


def write_index_part(data_dir, name, inputs, arrays):
    """Write the part `name`: `inputs` in its header, then `arrays` ({name: array}), in their order."""
    arrays = {k: np.ascontiguousarray(a) for k, a in arrays.items()}
    layout, offset = {}, 0
    for key, array in arrays.items():
        layout[key] = [array.dtype.str, list(array.shape), offset]
        offset += -(-array.nbytes // 64) * 64
    header = json.dumps({"inputs": inputs, "arrays": layout}).encode()
    start = -(-(8 + len(header)) // 64) * 64
    os.makedirs(os.path.join(data_dir, INDEX), exist_ok=True)
    path = os.path.join(data_dir, INDEX, name)
    with open(path + TMP_SUFFIX, "wb") as f:
        f.write(len(header).to_bytes(8, "little") + header)
        for key, array in arrays.items():
            f.seek(start + layout[key][2])
            f.write(array.data)
        f.truncate(start + offset)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + TMP_SUFFIX, path)
    fsync_dir(os.path.join(data_dir, INDEX))


def open_index_part(data_dir, name, names):
    """(inputs as tuples, {name: read-only memmap}) of the arrays `names` of the part `name`."""
    path = os.path.join(data_dir, INDEX, name)
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
        start = -(-(8 + size) // 64) * 64
        arrays = {}
        for key in names:
            dtype, shape, offset = header["arrays"][key]
            empty = int(np.prod(shape)) == 0  # an empty map is refused by mmap
            arrays[key] = np.zeros(shape, dtype) if empty else np.memmap(path, dtype, "r", start + offset, tuple(shape))
        inputs = [tuple(i) for i in header["inputs"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{path}: unreadable index part ({e}); rebuild with --rebuild") from None
    return inputs, arrays
