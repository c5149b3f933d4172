"""The tokenizer both stages use: tiktoken encodings loaded by name or from a tokenizer directory
(encodings.py), their identity recorded beside datasets and runs (identity.py), text to ids (encoder.py: tiktoken,
or gigatoken where it gives the same ids, fast.py, checked on canary.py's texts; whitespace.py for where a text
may be cut), and the split patterns (patterns.py). `prepare tokenizer` trains one (training.py), `prepare
compare` compares them (compare.py). Import what you use from here."""

from prepare.tokenizer.encodings import (ENDOFTEXT, GPT2_FILES, TokenizerError, byte_characters, eot_token,
                                         gpt2_files, is_directory_spec, load_encoding, save_directory, token_bytes)
from prepare.tokenizer.encoder import CHOICES, described, encode, encode_to_numpy, encoder_for
from prepare.tokenizer.identity import install, mismatch, open_encoding, pattern_hash, ranks_hash, same_identity
from prepare.tokenizer.patterns import GPT4_PATTERN, PATTERNS, oniguruma_pattern
from prepare.tokenizer.whitespace import part_cut

__all__ = ["CHOICES", "ENDOFTEXT", "GPT2_FILES", "GPT4_PATTERN", "PATTERNS", "TokenizerError", "byte_characters",
           "described", "encode", "encode_to_numpy", "encoder_for", "eot_token", "gpt2_files", "install",
           "is_directory_spec", "load_encoding", "mismatch", "open_encoding", "oniguruma_pattern", "part_cut",
           "pattern_hash", "ranks_hash", "same_identity", "save_directory", "token_bytes"]
