"""`train export`: a run's model as a Hugging Face directory (train/hf.py) or as one GGUF file (train/gguf.py)."""

import dataclasses
import os

import torch

from train.checkpoint import load_encoding, load_model
from train.config import ConfigError


@dataclasses.dataclass(frozen=True)
class Exported:
    """Where a model went, and in which format ("hf" or "gguf")."""

    path: str
    kind: str

    def line(self):
        """What loads it."""
        if self.kind == "gguf":
            return (f"{self.path}: {os.path.getsize(self.path):,} bytes; runs in llama.cpp (llama-completion -m "
                    f"{self.path}, llama-server -m {self.path}), Ollama and LM Studio (docs/gguf.md)")
        return (f"{self.path}: loads with transformers' AutoModelForCausalLM.from_pretrained and "
                f"AutoTokenizer.from_pretrained")


def export_run(run_dir, out, kind="hf", tensor_type=None, pre_tokenizer=None, which="cooled", *, say, warn):
    """RUN's model (its `which` checkpoint) written to `out`, and said what loads it; `warn` says what a GGUF
    reader may read otherwise."""
    if kind == "hf" and (tensor_type or pre_tokenizer):
        raise ConfigError("--type and --pre-tokenizer are for --format gguf")
    if os.path.isdir(out) if kind == "gguf" else os.path.isfile(out):
        raise ConfigError(f"{out} is a {'directory' if kind == 'gguf' else 'file'}; --format {kind} writes "
                          f"{'one file' if kind == 'gguf' else 'a directory'}")
    model, config = load_model(run_dir, which, torch.device("cpu"))
    encoding = load_encoding(run_dir, which, config)
    if kind == "gguf":
        from train.gguf import export as export_gguf

        export_gguf(model, config, encoding, out, tensor_type or "f16", pre_tokenizer,
                    name=os.path.basename(os.path.normpath(run_dir)), warn=warn)
    else:
        from train.hf import export as export_hf

        export_hf(model, config, out, encoding)
    exported = Exported(out, kind)
    say(exported.line())
    return exported
