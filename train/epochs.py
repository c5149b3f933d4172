"""Where windows start when they are not drawn anywhere, and the order an epoch visits those starts in: a
permutation drawn from a key that holds nothing of the corpus's size, so that a step's windows stay a pure
function of (seed, step) however large the data."""

import numpy as np


class Starts:
    """The window starts a split is sampled at when they are not every position: every `context` tokens of the
    stream, or (`documents`) each document's start and every `context` tokens after it inside the document,
    as modded-nanogpt aligns sequences to documents. The last ones move back to leave room for a window."""

    def __init__(self, split, documents):
        self.split, step = split, split.context
        if documents:
            self.documents = split.document_starts()
            per_document = -(-np.diff(np.append(self.documents, split.tokens)) // step)
            self.first = np.cumsum(per_document) - per_document  # the number of each document's first start
            self.count = int(per_document.sum())
        else:
            self.documents, self.count = None, -(-split.windows // step)

    def positions(self, numbers):
        """Stream positions of the starts numbered `numbers` (int64 in [0, count))."""
        step = self.split.context
        if self.documents is None:
            positions = numbers * step
        else:
            document = np.searchsorted(self.first, numbers, side="right") - 1
            positions = self.documents[document] + (numbers - self.first[document]) * step
        return np.minimum(positions, self.split.windows - 1)

    def in_epochs(self, numbers, key):
        """Positions of the windows numbered `numbers` over the run (int64), when every epoch visits each start
        once in an order drawn from `key` and the epoch's number."""
        epoch, index = np.divmod(numbers, self.count)
        order = np.empty_like(numbers)
        for e in np.unique(epoch):
            order[epoch == e] = permuted(index[epoch == e], self.count, [*key, int(e)])
        return self.positions(order)


def permuted(indices, n, key):
    """Where a pseudo-random permutation of range(n), chosen by `key` (a list of ints), sends `indices`: a
    4-round Feistel network on the smallest even-bit domain holding n, applied again while the value falls
    outside [0, n) (cycle walking). A pure function that needs no table of n entries, whatever n."""
    half = np.uint64((max(2, int(n - 1).bit_length()) + 1) // 2)
    mask = (np.uint64(1) << half) - np.uint64(1)
    keys = np.random.default_rng(key).integers(0, 2**63, size=4, dtype=np.uint64)
    values, todo = np.asarray(indices, np.uint64).copy(), np.ones(len(indices), bool)
    while todo.any():
        v = values[todo]
        for k in keys:  # each round: the halves swap, one mixed (splitmix64's finaliser) into the other
            left, right = v >> half, v & mask
            z = (right ^ k) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(31))) * np.uint64(0x94D049BB133111EB)
            v = (right << half) | (left ^ ((z ^ (z >> np.uint64(29))) & mask))
        values[todo] = v
        todo = values >= n
    return values.astype(np.int64)
