"""The two model families, GPT-2 (train/model.py) and Llama-style (train/llama.py): the shape a run
configuration gives, and a freshly initialised model of a shape."""

from train.llama import Llama, LlamaConfig
from train.model import GPT, GPTConfig


def model_config(config, dropout=None, vocab_size=None):
    """The model shape of a run configuration (with the vocabulary of its tokenizer, unless given): a GPTConfig
    or a LlamaConfig."""
    shape = dict(vocab_size=vocab_size or config.tokenizer["vocab_size"], context=config.context, n_layer=config.n_layer,
                 n_head=config.n_head, n_embd=config.n_embd, dropout=config.dropout if dropout is None else dropout)
    if config.family == "llama":
        return LlamaConfig(**shape, mlp=config.mlp, qk_norm=config.qk_norm, tie_embeddings=config.tie_embeddings)
    return GPTConfig(**shape, bias=config.bias)


def build_model(shape):
    """A freshly initialised model of the family `shape` belongs to."""
    return Llama(shape) if isinstance(shape, LlamaConfig) else GPT(shape)
