"""The model families, registered in FAMILIES: the run configuration, the command line's --model, and export
to Hugging Face and GGUF all read a family from here.

A family is two modules of this folder: `<name>.py`, its network (torch), and `<name>_family.py`, all else
gptmill knows of it, without torch (so that `--help` and the configuration need no torch): SHAPES, PRESETS,
TRAIN_DEFAULTS and INIT_FROM_PRESET; its shape dataclass SHAPE and `shape(config, **common)`; `build(shape)`;
what it cannot take, in words (`option_problem`, `shape_problem`, `hf_export_problem`, `hf_import_problem`,
`gguf_export_problem`); its Hugging Face names (HF_MODEL_TYPES, EMBEDDINGS, `hf_export`, `hf_shape`,
`hf_weight`) and its GGUF ones (`gguf_export`, `gguf_hyperparameters`). gpt2_family.py is the shortest example.
"""

from train.models import gpt2_family, llama_family

FAMILIES = {"gpt2": gpt2_family, "llama": llama_family}  # in the order --model lists their presets

PRESETS = {name: preset for family in FAMILIES.values() for name, preset in family.PRESETS.items()}
TRAIN_DEFAULTS = {name: values for family in FAMILIES.values() for name, values in family.TRAIN_DEFAULTS.items()}
# A Hugging Face config.json's model_type -> the family that holds it.
HF_FAMILIES = {model_type: family for family in FAMILIES.values() for model_type in family.HF_MODEL_TYPES}


def model_config(config, dropout=None, vocab_size=None):
    """The model shape of a run configuration (with the vocabulary of its tokenizer, unless given)."""
    common = dict(vocab_size=vocab_size or config.tokenizer["vocab_size"], context=config.context,
                  n_layer=config.n_layer, n_head=config.n_head, n_embd=config.n_embd,
                  dropout=config.dropout if dropout is None else dropout)
    return FAMILIES[config.family].shape(config, **common)


def build_model(shape):
    """A freshly initialised model of the family `shape` belongs to."""
    return next(family for family in FAMILIES.values() if isinstance(shape, family.SHAPE)).build(shape)
