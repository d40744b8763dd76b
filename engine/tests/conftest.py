"""Shared fixtures: tiny models built from config (no hub, no network) and the real stories260k model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from distillery_engine.models import (
    build_char_tokenizer,
    build_model_from_config,
    choose_placement,
    load_model,
    load_tokenizer,
    save_model,
)

ENGINE_DIR = Path(__file__).resolve().parents[1]
STORIES_DIR = Path(__file__).resolve().parents[3] / "shared/models/stories260k"
STORIES_PROMPT = "Once upon a time"
STORIES_PROMPT_IDS = [1, 403, 407, 261, 378]
# Greedy continuation of STORIES_PROMPT: 57 tokens.
STORIES_GOLDEN = (
    ", there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball."
    " She wanted to play with it, but it was too high."
)
STORIES_GOLDEN_TOKENS = 57

ALPHABET = "abcdefghijklmnopqrstuvwxyz .,!?\n"

# Tiny models run fastest on one thread, and the test machine is shared: extra threads only spin.
torch.set_num_threads(1)


def tiny_config(model_type: str) -> dict:
    vocab = 4 + len(ALPHABET)
    # initializer_range is well above the default 0.02 so the random model's next-token distributions are
    # peaked: greedy outputs then have clear margins and do not flip on floating-point noise between code paths.
    if model_type == "gpt2":  # learned absolute positions: catches wrong position_ids under left padding
        return {"model_type": "gpt2", "vocab_size": vocab, "n_embd": 32, "n_layer": 2, "n_head": 4,
                "n_positions": 96, "initializer_range": 0.4, "bos_token_id": 1, "eos_token_id": 2}
    return {
        "model_type": model_type, "vocab_size": vocab, "hidden_size": 32, "intermediate_size": 64,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
        "max_position_embeddings": 96, "initializer_range": 0.4,
        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3, "tie_word_embeddings": False,
    }


def make_tiny_model(
    out_dir: Path, model_type: str = "llama", seed: int = 0, alphabet: str = ALPHABET, config: dict | None = None
) -> Path:
    """A randomly initialised char-level model saved in Hugging Face layout: tiny_config(model_type), or
    `config` with the vocabulary size of the tokenizer built for `alphabet`."""
    build_char_tokenizer(alphabet, out_dir)
    tokenizer = load_tokenizer(out_dir)
    if config is not None:
        config = {**config, "vocab_size": len(tokenizer)}
    model = build_model_from_config(config if config is not None else tiny_config(model_type), seed=seed)
    save_model(model, tokenizer, out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny(tiny_model_dir: Path):
    """(model, tokenizer) of the tiny llama, fp32 on CPU."""
    return load_model(tiny_model_dir, placement=choose_placement("cpu"))


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory):
    path = make_tiny_model(tmp_path_factory.mktemp("tiny-qwen3"), model_type="qwen3", seed=1)
    return load_model(path, placement=choose_placement("cpu"))


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory):
    path = make_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"), model_type="gpt2", seed=2)
    return load_model(path, placement=choose_placement("cpu"))


@pytest.fixture(scope="session")
def stories_dir() -> Path:
    if not (STORIES_DIR / "config.json").is_file():
        pytest.skip(f"stories260k not found at {STORIES_DIR} (it lives in ../shared/models next to the repo)")
    return STORIES_DIR


@pytest.fixture(scope="session")
def stories(stories_dir: Path):
    return load_model(stories_dir, placement=choose_placement("cpu"))


def engine_env() -> dict[str, str]:
    """Environment for engine subprocesses: the package importable, one thread like the in-process tests."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ENGINE_DIR) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env
