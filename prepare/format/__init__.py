"""The on-disk format of a prepared dataset, version 2: the one place both stages agree on (docs/format.md).

A dataset directory is append-only and log-structured:

    manifest.json                 the generation in force (replaced atomically)
    generations/g000012.json      each generation's manifest, kept while a reader may still use it
    leases/g000012                a reader holds a shared flock on the lease of the generation it reads
    pins/<run>.json               generations a training run needs to replay itself
    tokens/train-<run>-0000.bin   immutable token files: raw little-endian ids of the manifest's dtype
    sources/<run>-0000.jsonl      immutable segments of per-input records (prepare's bookkeeping)
    tasks/g000012-of-64/          claims and results of a job's tasks on several machines, until committed
    index/<run>-0000.idx          immutable parts of the index of kept documents (--dedup)
    tokenizer/                    a tokenizer trained by `prepare tokenizer` (ranks.tiktoken, encoding.json)
    report.html                   what `prepare report` writes by default (not part of the dataset)
    .lock                         flock'd by the prepare writing the dataset

Nothing is rewritten in place: the manifest lists the live extents of token files per split; the documents of
a changed or deleted input are retired from them, and files no live generation needs are collected.

One module each: layout (every name above), durable (writes a crash leaves whole), manifest (its typed objects),
generations (publishing one, reading one under a lease), pins, claims, segments, index_parts (how a part lies in
its file), verify. `from prepare import format as fmt` gives all their names.
"""

from prepare.format.claims import claimed_runs, jobs
from prepare.format.durable import free_bytes, fsync_dir, is_disk_full, naming, sha256_file, write_atomic
from prepare.format.generations import Snapshot, holds, make_lease, open_generation, open_snapshot, publish
from prepare.format.index_parts import open_index_part, write_index_part
from prepare.format.layout import (CLAIM_SUFFIX, GENERATIONS, INDEX, INDEX_SUFFIX, LEASES, LOCK, MANIFEST, PINS, REPORT,
                                   SOURCES, SPLITS, TASKS, TMP_SUFFIX, TOKENIZER, TOKENS, V1_SHARD, DatasetError,
                                   claim_path, generation_path, index_part_name, is_ours, lease_generation,
                                   lease_path, manifest_path, new_run_id, pin_path, plain_name, run_of, segment_name,
                                   token_file_name, token_path)
from prepare.format.manifest import (FORMAT, VERSION, Extent, Manifest, TokenFile, Tokenizer, dtype_for_vocab,
                                     is_version_1, read_manifest, read_manifest_file)
from prepare.format.pins import pin, pinned_generations, read_pins
from prepare.format.segments import added_extents, read_segment, read_sources, write_segment
from prepare.format.verify import check_files, fingerprint, verify_file
