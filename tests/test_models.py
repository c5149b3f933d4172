"""The registry of model families (train/models/): every family defines what the configuration, the command line
and export read from it, and no two share a preset name. (That the command line reads them without importing
torch is test_train.py's test_help_never_imports_torch.)"""

import pytest

from train import models
from train.models.layers import LanguageModel
from train.models.shape import Shape

# What train/models/__init__.py's docstring says a family module defines.
FAMILY_NAMES = ("SHAPES", "PRESETS", "TRAIN_DEFAULTS", "INIT_FROM_PRESET", "SHAPE", "shape", "build", "option_problem",
                "shape_problem", "HF_MODEL_TYPES", "EMBEDDINGS", "hf_export", "hf_export_problem", "hf_shape",
                "hf_import_problem", "hf_weight", "gguf_export", "gguf_export_problem", "gguf_hyperparameters")


@pytest.mark.parametrize("name", list(models.FAMILIES))
def test_a_family_defines_what_the_registry_reads_and_builds_its_network(name):
    family = models.FAMILIES[name]
    assert [n for n in FAMILY_NAMES if not hasattr(family, n)] == []
    assert set(family.PRESETS) == set(family.TRAIN_DEFAULTS) == set(family.SHAPES)
    assert family.INIT_FROM_PRESET in family.PRESETS and {p["family"] for p in family.PRESETS.values()} == {name}
    assert issubclass(family.SHAPE, Shape)
    shape = family.SHAPE(vocab_size=100, **{**family.SHAPES[family.INIT_FROM_PRESET], "n_layer": 1})
    model = models.build_model(shape)
    assert isinstance(model, LanguageModel) and model.config is shape
    assert all(models.HF_FAMILIES[model_type] is family for model_type in family.HF_MODEL_TYPES)


def test_no_two_families_share_a_preset_name():
    assert len(models.PRESETS) == sum(len(family.PRESETS) for family in models.FAMILIES.values())
    assert list(models.PRESETS) == list(models.TRAIN_DEFAULTS)

