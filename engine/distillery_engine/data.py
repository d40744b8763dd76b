"""Supervised fine-tuning data: {"prompt", "completion"} JSONL → token ids, labels and padded batches.

An example becomes `prompt_ids + completion_ids + [EOS]`, with the prompt encoded the way sampling encodes it
(the tokenizer's own special tokens, i.e. its BOS; or the chat template with a generation prompt) and the
completion encoded as a continuation of it. Encoding the two parts separately keeps the prompt/completion
boundary exact: the model is trained on the very ids it conditions on and emits when sampling.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import PreTrainedTokenizerBase

from .generate import encode_continuation, encode_prompts

IGNORE_INDEX = -100  # label value that cross-entropy skips
LossOn = Literal["completion", "all"]


@dataclass(frozen=True)
class Example:
    prompt: str
    completion: str
    line: int  # 1-based line number in the source file, for error messages


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]  # same length as input_ids; IGNORE_INDEX where no loss is taken


def parse_object_line(line: str, where: str, *, column: bool = False) -> dict[str, Any]:
    """One JSONL line that must be a JSON object. Errors start with `where` (file and line number) and, when
    `column` is set, say at which column the JSON broke."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        at = f" at column {e.colno}" if column else ""
        raise ValueError(f"{where}: not valid JSON ({e.msg}{at})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    return obj


def load_examples(path: str | os.PathLike[str]) -> list[Example]:
    """Read and validate a JSONL file of {"prompt": str, "completion": str} objects (other keys are ignored).

    Blank lines are skipped. Errors name the file and the 1-based line number.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file not found: {p}")
    examples: list[Example] = []
    with p.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            obj = parse_object_line(line, f"{p}:{lineno}")
            for key in ("prompt", "completion"):
                if key not in obj:
                    raise ValueError(f"{p}:{lineno}: missing field {key!r}")
                if not isinstance(obj[key], str):
                    raise ValueError(f"{p}:{lineno}: field {key!r} must be a string, got {type(obj[key]).__name__}")
            examples.append(Example(obj["prompt"], obj["completion"], lineno))
    if not examples:
        raise ValueError(f"{p}: no examples (the file is empty)")
    return examples


def tokenize_example(
    tokenizer: PreTrainedTokenizerBase,
    example: Example,
    loss_on: LossOn = "completion",
    chat_template: bool = False,
    max_seq_len: int | None = None,
) -> TokenizedExample | None:
    """prompt ids + completion ids + EOS, truncated to max_seq_len. None when no completion token survives."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no EOS token; completions cannot be terminated")
    try:
        # Exactly as sampling encodes a prompt, so training and sampling see the same ids.
        [prompt_ids] = encode_prompts(tokenizer, [example.prompt], chat_template)
    except ValueError as e:
        raise ValueError(f"data line {example.line}: {e}") from None
    completion_ids = encode_continuation(tokenizer, example.completion) + [eos]
    input_ids = (prompt_ids + completion_ids)[:max_seq_len]
    if len(input_ids) <= len(prompt_ids):
        return None
    if loss_on == "completion":
        labels = [IGNORE_INDEX] * len(prompt_ids) + input_ids[len(prompt_ids):]
    elif loss_on == "all":
        labels = list(input_ids)
    else:
        raise ValueError(f"loss_on must be 'completion' or 'all', got {loss_on!r}")
    return TokenizedExample(input_ids, labels)


@dataclass
class TokenizedDataset:
    examples: list[TokenizedExample]
    dropped: int  # examples with no completion token left after truncation
    total: int  # examples read


def tokenize_examples(
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Example],
    loss_on: LossOn = "completion",
    chat_template: bool = False,
    max_seq_len: int | None = None,
) -> TokenizedDataset:
    kept: list[TokenizedExample] = []
    for ex in examples:
        tokenized = tokenize_example(tokenizer, ex, loss_on, chat_template, max_seq_len)
        if tokenized is not None:
            kept.append(tokenized)
    return TokenizedDataset(kept, len(examples) - len(kept), len(examples))


def collate(batch: list[TokenizedExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: input_ids, attention_mask (1 = real token), labels (-100 on padding)."""
    width = max(len(ex.input_ids) for ex in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    for row, ex in enumerate(batch):
        n = len(ex.input_ids)
        input_ids[row, :n] = torch.tensor(ex.input_ids, dtype=torch.long)
        attention_mask[row, :n] = 1
        labels[row, :n] = torch.tensor(ex.labels, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
