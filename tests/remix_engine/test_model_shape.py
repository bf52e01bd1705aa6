"""Model shapes without weights: parameter counts by hand, config.json dicts, offline lookups only."""

import json

import huggingface_hub.constants
import pytest
from transformers import GPT2Config, LlamaConfig

from remix_engine.config import ModelConfig
from remix_engine.model_shape import TINY_MODEL_CONFIG, ModelShape, load_model_config, offline_model_shape
from remix_engine.toy import build_char_tokenizer, build_untrained_model

# The builtin tiny Llama: vocab 101, hidden 128, MLP 256, 4 layers, 4 heads of 32, tied embeddings.
TINY = LlamaConfig(
    vocab_size=101,
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=4,
    tie_word_embeddings=True,
)
# embeddings 101*128 = 12,928; per layer q,k,v,o 4*128*128 = 65,536 + gated MLP 3*128*256 = 98,304
# + two norms 256 = 164,096; 4 layers = 656,384; final norm 128.
TINY_PARAMS = 12_928 + 656_384 + 128


def test_parameter_count_matches_the_real_model():
    shape = ModelShape.from_config(TINY)
    assert shape.num_params == TINY_PARAMS
    model = build_untrained_model(build_char_tokenizer(), seed=0)
    assert sum(p.numel() for p in model.parameters()) == TINY_PARAMS
    assert ModelShape.from_config(model.config) == shape


def test_builtin_model_config_loads_without_weights():
    config = load_model_config(ModelConfig(name_or_path="builtin:tiny-arith"))
    assert ModelShape.from_config(config).num_params == TINY_PARAMS


def test_builtin_model_shape_is_known_without_torch():
    # The API reads the tiny model's shape from a constant; it must match the model toy.py builds.
    real = ModelShape.from_config(build_untrained_model(build_char_tokenizer(), seed=0).config)
    assert ModelShape.from_dict(TINY_MODEL_CONFIG) == real
    assert offline_model_shape(ModelConfig()) == real


def test_config_json_dicts_give_the_same_shape_as_transformers_configs():
    assert ModelShape.from_dict(TINY.to_dict()) == ModelShape.from_config(TINY)
    gpt2 = {
        "model_type": "gpt2",
        "vocab_size": 50257,
        "n_embd": 768,
        "n_layer": 12,
        "n_head": 12,
        "n_inner": None,
        "tie_word_embeddings": True,
    }
    assert ModelShape.from_dict(gpt2) == ModelShape.from_config(GPT2Config(**gpt2))  # transformers maps n_embd, ...
    assert ModelShape.from_dict(gpt2).hidden_size == 768 and ModelShape.from_dict(gpt2).num_layers == 12
    nested = {"model_type": "llava", "text_config": TINY.to_dict()}
    assert ModelShape.from_dict(nested) == ModelShape.from_config(TINY)
    with pytest.raises(AttributeError, match="hidden_size"):
        ModelShape.from_dict({"model_type": "mystery"})


def test_offline_shapes_come_from_local_folders_and_the_hub_cache_only(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(TINY.to_dict()))
    assert offline_model_shape(ModelConfig(name_or_path=str(folder))) == ModelShape.from_config(TINY)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert offline_model_shape(ModelConfig(name_or_path="acme/absent")) is None  # never downloaded
    snapshot = tmp_path / "hub" / "models--acme--tiny" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(TINY.to_dict()))
    (tmp_path / "hub" / "models--acme--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--acme--tiny" / "refs" / "main").write_text("abc")
    assert offline_model_shape(ModelConfig(name_or_path="acme/tiny")) == ModelShape.from_config(TINY)
    (folder / "config.json").write_text("{not json")
    assert offline_model_shape(ModelConfig(name_or_path=str(folder))) is None
