"""Loading, building and saving causal language models in Hugging Face layout.

Everything the engine does starts here: pick the device and precision, load a model folder (optionally with a
LoRA adapter on top), or build a fresh model from a config and a character-level tokenizer for the demo.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Iterable
from typing import Any

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

transformers.utils.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
logging.getLogger("transformers").setLevel(logging.ERROR)

# Special tokens of the character-level tokenizer, in id order.
CHAR_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]


@dataclass(frozen=True)
class Placement:
    """Where a model runs and in what precision."""

    device: torch.device
    # dtype of the weights when only sampling / scoring
    infer_dtype: torch.dtype
    # dtype used inside torch.autocast while training (None = no autocast, plain fp32)
    autocast_dtype: torch.dtype | None


def choose_placement(device: str | None = None, dtype: str | None = None) -> Placement:
    """CUDA if present, else CPU. bf16 where the GPU supports it; fp32 on CPU (bf16 matmuls are slow there)."""
    if device in (None, "auto"):
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        dev = torch.device(device)
    if dtype in (None, "auto"):
        bf16 = dev.type == "cuda" and torch.cuda.is_bf16_supported()
        return Placement(dev, torch.bfloat16 if bf16 else torch.float32, torch.bfloat16 if bf16 else None)
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of auto, float32, bfloat16, float16")
    chosen = table[dtype]
    return Placement(dev, chosen, None if chosen == torch.float32 else chosen)


def check_model_dir(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if not p.is_dir():
        raise FileNotFoundError(f"model folder not found: {p}")
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{p} is not a Hugging Face model folder: config.json is missing")
    return p


def load_tokenizer(path: str | os.PathLike[str]) -> PreTrainedTokenizerBase:
    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token_id is None:
        # Padding positions are always masked out, so any id works; EOS is the usual choice.
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.convert_ids_to_tokens(0)
    return tok


def load_model(
    path: str | os.PathLike[str],
    adapter: str | os.PathLike[str] | None = None,
    placement: Placement | None = None,
    for_training: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a model folder (plus an optional PEFT adapter). Training keeps fp32 master weights."""
    p = check_model_dir(path)
    placement = placement or choose_placement()
    dtype = torch.float32 if for_training else placement.infer_dtype
    model = AutoModelForCausalLM.from_pretrained(str(p), dtype=dtype)
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=for_training)
    model.to(placement.device)
    model.train(for_training)
    return model, load_tokenizer(p)


def build_char_tokenizer(alphabet: str, out_dir: str | os.PathLike[str], model_max_length: int = 2048) -> None:
    """Write a character-level tokenizer (tokenizer.json + tokenizer_config.json) for `alphabet`.

    Ids: <unk>=0, <s>=1, </s>=2, <pad>=3, then one id per distinct character in order of first appearance.
    BOS is prepended by the post-processor, like Llama tokenizers, so base-model prompts look the same.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers

    # A BPE model with no merges is a character-level model; unknown characters map to <unk>.
    tokenizer = Tokenizer(models.BPE(vocab=_specials_then(alphabet), merges=[], unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    _save_tokenizer(tokenizer, out_dir, model_max_length)


def build_piece_tokenizer(
    pieces: list[str], pattern: str, out_dir: str | os.PathLike[str], model_max_length: int = 2048
) -> None:
    """Write a tokenizer whose tokens are whole pieces: the text is split by the regex `pattern` (each match is a
    piece; text between matches too) and each piece is one id, <unk> when it is not in `pieces`.

    Ids: the four specials, then `pieces` in order. Decoding concatenates the pieces, so text round-trips exactly
    when every piece is known. For small synthetic languages, where an identifier should be one token.
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    tokenizer = Tokenizer(models.WordLevel(vocab=_specials_then(pieces), unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    _save_tokenizer(tokenizer, out_dir, model_max_length)


def _specials_then(tokens: Iterable[str]) -> dict[str, int]:
    vocab = {tok: i for i, tok in enumerate(CHAR_SPECIALS)}
    for tok in tokens:
        if tok not in vocab:
            vocab[tok] = len(vocab)
    return vocab


def _save_tokenizer(tokenizer: Any, out_dir: str | os.PathLike[str], model_max_length: int) -> None:
    from tokenizers import decoders, processors

    tokenizer.decoder = decoders.Fuse()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    tokenizer.add_special_tokens(CHAR_SPECIALS)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": "<unk>",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "add_bos_token": True,
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def build_model_from_config(config: dict[str, Any], seed: int = 0) -> PreTrainedModel:
    """A freshly initialised model from config kwargs; `model_type` picks the architecture (llama, qwen3, ...)."""
    kwargs = dict(config)
    model_type = kwargs.pop("model_type", "llama")
    cfg = AutoConfig.for_model(model_type, **kwargs)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    return model


def count_parameters(model: torch.nn.Module) -> int:
    # Tied weights are one tensor, so deduplicate by storage.
    seen: set[int] = set()
    total = 0
    for param in model.parameters():
        key = param.data_ptr()
        if key in seen:
            continue
        seen.add(key)
        total += param.numel()
    return total


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: str | os.PathLike[str]) -> None:
    """Save in Hugging Face layout (safetensors). A PEFT model is merged first, so the result stands alone."""
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model = model.merge_and_unload()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
