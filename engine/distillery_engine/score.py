"""Log-probabilities of given continuations under a model (teacher scores, likelihood evals).

Tokenization choice: the prompt and the continuation are tokenized separately and their ids concatenated.
The prompt is encoded exactly as `generate` encodes it (BOS or chat template), and the continuation without
special tokens. So the boundary between them is where the model began generating, and a continuation's
log-prob never depends on how its first characters would merge with the prompt's last ones. Continuation
text is encoded as the train job encodes completions (`generate.encode_continuation`: no spurious leading "▁"
from SentencePiece-style tokenizers). Text is not always tokenized the way it was sampled, so pass the sampled
token ids instead of the text when they are known.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .generate import accepts_logits_to_keep, encode_continuation, encode_prompts

# A continuation is text, or token ids already known (e.g. the ids a sampler produced).
Continuation = str | Sequence[int]


@dataclass(frozen=True)
class Score:
    token_ids: list[int]
    token_logprobs: list[float]
    total_logprob: float

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def continuation_ids(tokenizer: PreTrainedTokenizerBase, continuation: Continuation) -> list[int]:
    """Text is encoded as the training data encode completions (no spurious prefix space); ids pass through."""
    if isinstance(continuation, str):
        return encode_continuation(tokenizer, continuation)
    ids = list(continuation)
    if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i for i in ids):
        raise ValueError("continuation token ids must be non-negative integers")
    return ids


@torch.inference_mode()
def score(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    items: Sequence[tuple[str, Continuation]],
    chat_template: bool = False,
    batch_size: int = 16,
) -> list[Score]:
    """log p(continuation token | prompt, earlier continuation tokens) for each (prompt, continuation)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    prompt_ids = encode_prompts(tokenizer, [p for p, _ in items], chat_template)
    cont_ids = [continuation_ids(tokenizer, c) for _, c in items]
    head = model.get_output_embeddings()
    vocab = head.weight.shape[0] if head is not None else model.config.vocab_size
    for index, ids in enumerate(cont_ids):
        if any(i >= vocab for i in ids):
            raise ValueError(f"item {index}: continuation token id out of range (vocabulary {vocab})")

    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    results: list[Score | None] = [None] * len(items)
    # Similar lengths together waste less padding.
    order = sorted(range(len(items)), key=lambda i: len(prompt_ids[i]) + len(cont_ids[i]))
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        longest_cont = max(len(cont_ids[i]) for i in batch)
        if longest_cont == 0:
            for i in batch:
                results[i] = Score([], [], 0.0)
            continue
        sequences = [prompt_ids[i] + cont_ids[i] for i in batch]
        width = max(len(s) for s in sequences)
        # Left padding: every continuation ends in the last column, so the logits we need are the last ones.
        input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            input_ids[row, width - len(seq) :] = torch.tensor(seq)
            attention[row, width - len(seq) :] = 1
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        # Logits at column c predict column c+1; the continuation's predictions sit in the last
        # (len(cont) + 1) columns minus the very last one. Keep only those columns to spare memory.
        keep = longest_cont + 1
        extra = {"logits_to_keep": keep} if accepts_logits_to_keep(model) else {}
        logits = model(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            position_ids=positions.to(device),
            use_cache=False,
            **extra,
        ).logits[:, -keep:]
        for row, i in enumerate(batch):
            n = len(cont_ids[i])
            if n == 0:
                results[i] = Score([], [], 0.0)
                continue
            predicting = logits[row, keep - n - 1 : keep - 1].float().log_softmax(dim=-1)
            targets = torch.tensor(cont_ids[i], device=predicting.device).unsqueeze(-1)
            token_logprobs = predicting.gather(-1, targets).squeeze(-1).tolist()
            total = math.fsum(token_logprobs)
            results[i] = Score(cont_ids[i], token_logprobs, total)
    return [r for r in results if r is not None]
