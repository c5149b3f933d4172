"""The main process's reading of a build's inputs, in input order, into the batches the workers tokenize: a small
file is left to the worker that tokenizes it (reading it there costs the main process nothing); the documents of
other inputs are read here and sent a batch at a time. A long document comes in Parts, hashed here for its split
as it is read, since no worker sees all of it."""

import collections
import functools
import hashlib
import sys

from tqdm import tqdm

from prepare.readers import bucket, iter_documents
from prepare.readers.base import Part, SourceError
from prepare.sources import identify
from prepare.tokenizer import load_encoding, part_cut
from prepare.workers import Batch, hash_is_val

BATCH_CHARS = 1 << 20  # text sent to a worker at once: large enough to amortise the hand-over
WORKER_READS = 4 << 20  # files up to this size are read by the worker that tokenizes them


class Reader:
    """Reads `work` into Batches. `stats`: each input's SourceStats; `cap`: the build's TokenCap; `commit_due`:
    whether a commit is due (a batch then ends with an input). `whole`: read every document whole (a build that
    screens hashes all of each one)."""

    def __init__(self, work, opts, stats, cap, commit_due, whole):
        self.work, self.opts, self.stats, self.cap, self.commit_due = work, opts, stats, cap, commit_due
        # Where a long document's Parts are cut: where the tokens stay the same as the whole document's.
        self.cut = None if whole else functools.partial(part_cut, load_encoding(opts["encoding"])._pat_str)
        # Each long document's split and whether it was blank, decided at its end: (val, blank) in reading order.
        self.ends = collections.deque()
        self.digest, self.blank = None, True

    def batches(self):
        """Batches in input order: small files are left to the workers to read, a batch of them at a time;
        other inputs' documents are read here. A batch ends at an input's end when a commit is due. Bad input
        ends the stream with a batch carrying the error after the documents of the inputs before it."""
        batch, size = Batch(0), 0
        for i, item in enumerate(self.work):
            bucket.fetch_ahead(w.entry for w in self.work[i : i + bucket.AHEAD])
            worker_reads = item.entry["kind"] == "file" and item.entry["size"] <= WORKER_READS and not item.resume_at
            if (batch.texts or batch.inputs) and (self.commit_due() or bool(batch.inputs) != worker_reads):
                yield batch
                batch, size = Batch(i), 0
            batch.reading = i
            if worker_reads:
                batch.inputs.append((i, item.entry))
                batch.reading, size = i + 1, size + item.entry["size"]
                if size >= BATCH_CHARS:
                    yield batch
                    batch, size = Batch(i + 1), 0
                continue
            try:
                identified(item, identify(item.entry))
                for text in iter_documents(item.entry, self.opts, self.stats[i], warn, item.resume_at, self.cut):
                    if self.cap.reached(i):
                        break
                    if isinstance(text, Part):
                        self.hash_part(text)
                    batch.add(text, i)
                    size += len(text)
                    if size >= BATCH_CHARS:
                        yield batch
                        batch, size = Batch(i), 0
            except SourceError as error:
                yield failed(batch, i, error)
                return
            batch.reading = i + 1
        if batch.texts or batch.inputs:
            yield batch

    def hash_part(self, part):
        if not part.continued:
            self.digest, self.blank = hashlib.blake2b(digest_size=8), True
        self.digest.update(part.encode("utf-8", "surrogatepass"))
        self.blank = self.blank and not part.strip()
        if not part.more:
            self.ends.append((hash_is_val(self.digest, self.opts["val_fraction"]), self.blank))


def identified(item, sha):
    """Note an input's content identity, where its reader hashed it."""
    if sha is not None:
        item.entry["sha256"] = sha


def failed(batch, i, error):
    """The batch to send when input i turns out bad: the documents of the inputs before it, and the error."""
    keep = [k for k, owner in enumerate(batch.owners) if owner < i]
    return Batch(i, [batch.texts[k] for k in keep], [batch.owners[k] for k in keep], error=error,
                 continued=[batch.continued[k] for k in keep if k < len(batch.continued)],
                 more=[batch.more[k] for k in keep if k < len(batch.more)])


def warn(message):
    tqdm.write(f"warning: {message}", file=sys.stderr)
