"""What the shape of a model of every family holds, without torch: the run configuration and the command line
read shapes before (or without) building a model."""

import dataclasses


@dataclasses.dataclass
class Shape:
    vocab_size: int = 50257  # the tokenizer's; the embedding is padded to a multiple of 64 for speed
    context: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0

    @property
    def padded_vocab(self):
        """The embedding's rows: the tokenizer's vocabulary padded to a multiple of 64, for speed."""
        return -(-self.vocab_size // 64) * 64

    @property
    def head_dim(self):
        return self.n_embd // self.n_head
