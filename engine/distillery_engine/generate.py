"""Batched sampling in plain PyTorch: left padding, a KV cache, and one random stream per sample.

Decoding rules (docs/architecture.md, shared by the worker's `generate` and the `sample` job):

- temperature 0 is greedy (argmax; top-k/top-p/min-p are ignored).
- Otherwise: logits / temperature, then top-k (0 = off), then top-p (1 = off), then min-p (0 = off), then
  sample. Each filter sees the distribution the previous one left, renormalised.
- Every (prompt_index, sample_index) pair draws from its own generator seeded from (seed, prompt_index,
  sample_index), one uniform number per generated token, mapped to a token by inverse CDF. So a sample does
  not depend on the batch size, on which other rows share its batch, or on a resumed job skipping rows.
  (Only the floating-point noise of different batch shapes remains, which can flip a near-tie.)
- A completion ends at EOS (`finish_reason: "eos"`), at the earliest stop string found in its decoded text
  (`"stop"`; the stop text and anything after it are cut), or after `max_tokens` tokens or at the model's
  context length (`"length"`).
- `token_ids` are all sampled tokens, including the EOS token or the token(s) that produced a stop string;
  `text` never contains the EOS or the stop text.

Prompts are sorted by length (longest first, so an out-of-memory shows up in the first batch) and cut into
batches of `batch_size` rows; results come back in (prompt_index, sample_index) order. Finished rows are
dropped from the batch and from its KV cache, so long stragglers do not pay for rows that are done.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

FinishReason = Literal["stop", "eos", "length"]

# How many trailing prompt tokens are decoded together with a completion. Decoding the completion alone can
# lose its leading space (SentencePiece decoders strip it at the start of a string); decoding it behind a few
# prompt tokens and cutting the prompt's text off keeps it, without re-decoding a long prompt every step.
_CONTEXT_TOKENS = 8


@dataclass(frozen=True)
class SamplingParams:
    """The decoding options of a `generate` request / `sample` job (defaults as in the contract)."""

    n: int = 1
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    seed: int = 0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    chat_template: bool = False
    batch_size: int = 32

    def __post_init__(self) -> None:
        def check_int(name: str, low: int | None) -> None:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            if low is not None and value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")

        def check_float(name: str, low: float, high: float, low_open: bool = False) -> None:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not (low < value if low_open else low <= value) or not value <= high:
                bracket = "(" if low_open else "["
                raise ValueError(f"{name} must be in {bracket}{low}, {high}], got {value}")

        check_int("n", 1)
        check_int("top_k", 0)
        check_int("seed", None)
        check_int("max_tokens", 1)
        check_int("batch_size", 1)
        check_float("temperature", 0.0, float("inf"))
        check_float("top_p", 0.0, 1.0, low_open=True)
        check_float("min_p", 0.0, 1.0)
        if not isinstance(self.chat_template, bool):
            raise ValueError(f"chat_template must be true or false, got {self.chat_template!r}")
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            raise ValueError(f"stop must be a list of non-empty strings, got {self.stop!r}")
        object.__setattr__(self, "stop", tuple(self.stop))

    @classmethod
    def from_dict(cls, options: Mapping[str, Any]) -> SamplingParams:
        """Build from request/job fields; unknown names are an error (a typo must not silently do nothing)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown sampling option(s) {unknown}; known: {sorted(known)}")
        return cls(**options)


@dataclass(frozen=True)
class Completion:
    prompt_index: int
    sample_index: int
    text: str
    token_ids: list[int]
    finish_reason: FinishReason

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------------------------- prompts


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str], chat_template: bool = False
) -> list[list[int]]:
    """Token ids per prompt.

    chat_template=False: the raw text with the tokenizer's default special tokens (e.g. BOS), as a base model
    saw its training text. chat_template=True: the prompt as one user message, rendered by the tokenizer's chat
    template with the assistant turn opened; the template writes its own special tokens, so none are added.
    """
    if chat_template:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "chat_template is true but this tokenizer has no chat template "
                "(tokenizer_config.json / chat_template.jinja); use chat_template: false for a base model"
            )
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
            for p in prompts
        ]
        encoded = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    else:
        encoded = [tokenizer(p)["input_ids"] for p in prompts]
    for index, ids in enumerate(encoded):
        if not ids:
            raise ValueError(f"prompt {index} encodes to no tokens, so there is nothing to condition on")
    return [list(ids) for ids in encoded]



_ANCHOR = "\n"


def _adds_prefix_space(tokenizer: PreTrainedTokenizerBase) -> bool:
    """SentencePiece-style tokenizers prepend '▁' to the start of every encoded string, so encoding a
    completion on its own yields a spurious leading space token that generation never produces after a prompt.
    Detect it by comparing a probe encoded alone with the same probe encoded after an anchor."""
    cached = getattr(tokenizer, "_distillery_prefix_space", None)
    if cached is not None:
        return bool(cached)
    probe = "a"
    alone = tokenizer(probe, add_special_tokens=False)["input_ids"]
    anchor = tokenizer(_ANCHOR, add_special_tokens=False)["input_ids"]
    after = tokenizer(_ANCHOR + probe, add_special_tokens=False)["input_ids"]
    result = after[: len(anchor)] == anchor and after[len(anchor):] != alone
    try:
        tokenizer._distillery_prefix_space = result  # type: ignore[attr-defined]
    except AttributeError:
        pass
    return result


def encode_continuation(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Ids of `text` as a continuation of earlier text (no special tokens, no spurious prefix space).

    Byte-level BPE tokenizers (Qwen, Llama 3, the char tokenizer) encode it directly. For tokenizers that
    prepend a word-boundary marker, `text` is encoded after a newline anchor and the anchor's ids removed.
    """
    if not text:
        return []
    if _adds_prefix_space(tokenizer):
        anchor = tokenizer(_ANCHOR, add_special_tokens=False)["input_ids"]
        ids = tokenizer(_ANCHOR + text, add_special_tokens=False)["input_ids"]
        if ids[: len(anchor)] == anchor:
            return list(ids[len(anchor):])
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def eos_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every id that ends a completion: generation_config, config and tokenizer may each name some."""
    found: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None) if source is not None else None
        if value is None:
            continue
        found.update([value] if isinstance(value, int) else value)
    return sorted(found)


def context_length(model: PreTrainedModel) -> int | None:
    """The longest sequence the model's positions cover, when its config says."""
    config = model.config
    config = getattr(config, "get_text_config", lambda: config)()
    value = getattr(config, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


# ----------------------------------------------------------------------------------------------- sampling


def row_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """A 63-bit seed for one (prompt, sample) pair: a hash, so neighbouring pairs get unrelated streams."""
    digest = hashlib.sha256(f"distillery:{seed}:{prompt_index}:{sample_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def row_generator(seed: int, prompt_index: int, sample_index: int) -> torch.Generator:
    # CPU generators on every device: the uniform draws (hence the samples) do not depend on the accelerator.
    return torch.Generator(device="cpu").manual_seed(row_seed(seed, prompt_index, sample_index))


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0) -> torch.Tensor:
    """Mask (to -inf) what top-k, then top-p, then min-p remove. `logits` [..., vocab], already divided by T.

    top-k keeps exactly k tokens (ties at the k-th value broken by torch.topk). top-p keeps the smallest set of
    most likely tokens whose probability reaches top_p (the most likely token is always kept). min-p keeps
    tokens whose probability is at least min_p times the most likely token's.
    """
    vocab = logits.shape[-1]
    if 0 < top_k < vocab:
        values, indices = torch.topk(logits, top_k, dim=-1)
        logits = torch.full_like(logits, float("-inf")).scatter(-1, indices, values)
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        drop_sorted = mass_before >= top_p  # the token is not needed to reach top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    if min_p > 0.0:
        probs = torch.softmax(logits, dim=-1)
        threshold = min_p * probs.max(dim=-1, keepdim=True).values
        logits = logits.masked_fill(probs < threshold, float("-inf"))
    return logits


def sample_tokens(logits: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """One token per row by inverse CDF, using one uniform draw from that row's own generator.

    Tokens with probability 0 (masked) can never be chosen: the search finds the first index whose cumulative
    probability is strictly above u·total, which needs a positive step at that index.
    """
    probs = torch.softmax(logits.double(), dim=-1)
    cdf = torch.cumsum(probs, dim=-1)
    uniforms = torch.stack([torch.rand((), generator=g, dtype=torch.float64) for g in generators])
    targets = (uniforms.to(cdf.device) * cdf[:, -1]).unsqueeze(-1)
    tokens = torch.searchsorted(cdf, targets, right=True).squeeze(-1)
    return tokens.clamp_(max=logits.shape[-1] - 1)


def next_tokens(
    logits: torch.Tensor, params: SamplingParams, generators: Sequence[torch.Generator | None]
) -> torch.Tensor:
    """Apply the decoding rules to last-position logits [rows, vocab] (float32)."""
    if params.temperature == 0:
        return logits.argmax(dim=-1)
    filtered = filter_logits(logits / params.temperature, params.top_k, params.top_p, params.min_p)
    return sample_tokens(filtered, [g for g in generators if g is not None])


# ----------------------------------------------------------------------------------------------- text


def completion_text(tokenizer: PreTrainedTokenizerBase, context_ids: Sequence[int], token_ids: Sequence[int]) -> str:
    """Decode `token_ids` as they read after `context_ids` (the prompt's last few tokens)."""
    if not token_ids:
        return ""
    prefix = tokenizer.decode(context_ids, skip_special_tokens=True)
    full = tokenizer.decode([*context_ids, *token_ids], skip_special_tokens=True)
    if full.startswith(prefix):
        return full[len(prefix) :]
    # A character split across the prompt/completion boundary changed the prefix; decode on its own.
    return tokenizer.decode(token_ids, skip_special_tokens=True)


def find_stop(text: str, stops: Iterable[str]) -> int | None:
    """Index of the earliest stop string in `text`, or None."""
    positions = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(positions) if positions else None


# ----------------------------------------------------------------------------------------------- batches


def plan_batches(prompt_lengths: Sequence[int], n: int, batch_size: int) -> list[list[tuple[int, int]]]:
    """(prompt_index, sample_index) rows, longest prompts first, cut into batches.

    Deterministic in its inputs, so a resumed job rebuilds the same batches and gets the same numbers.
    """
    order = sorted(range(len(prompt_lengths)), key=lambda i: (-prompt_lengths[i], i))
    rows = [(p, s) for p in order for s in range(n)]
    return [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]


@dataclass
class _Row:
    prompt_index: int
    sample_index: int
    prompt_ids: list[int]
    generator: torch.Generator | None
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: FinishReason | None = None

    def completion(self) -> Completion:
        assert self.finish_reason is not None
        return Completion(self.prompt_index, self.sample_index, self.text, self.token_ids, self.finish_reason)


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(model.forward).parameters


class _Finisher:
    """Decides, after each new token, whether a row is done (and with what text)."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        params: SamplingParams,
        eos_ids: Iterable[int],
        max_positions: int | None,
    ) -> None:
        self.tokenizer = tokenizer
        self.params = params
        self.eos_ids = frozenset(eos_ids)
        self.max_positions = max_positions
        # A stop string that newly appears must end in the last few tokens, so only a tail window is decoded
        # each step (decoding the whole completion every step is quadratic in its length). A token decodes to
        # at least a quarter character (byte-fallback pieces), hence 4 tokens per stop character, plus margin.
        longest = max((len(s) for s in params.stop), default=0)
        self.window = 4 * longest + _CONTEXT_TOKENS

    def text(self, row: _Row, token_ids: Sequence[int]) -> str:
        return completion_text(self.tokenizer, row.prompt_ids[-_CONTEXT_TOKENS:], token_ids)

    def _may_stop(self, row: _Row) -> bool:
        """Cheap pre-check on a tail window; the exact check on the whole text runs only when it fires."""
        ids = row.token_ids
        if len(ids) <= self.window + _CONTEXT_TOKENS:
            return True
        tail = completion_text(self.tokenizer, ids[-self.window - _CONTEXT_TOKENS : -self.window], ids[-self.window :])
        return find_stop(tail, self.params.stop) is not None

    def update(self, row: _Row, token: int) -> bool:
        """Append `token` to `row`; return True when the row has finished."""
        row.token_ids.append(token)
        if token in self.eos_ids:
            row.finish_reason = "eos"
            row.text = self.text(row, row.token_ids[:-1])
            return True
        if self.params.stop and self._may_stop(row):
            # Check the decoded text, not token ids: a stop string may span or split tokens.
            text = self.text(row, row.token_ids)
            cut = find_stop(text, self.params.stop)
            if cut is not None:
                row.finish_reason, row.text = "stop", text[:cut]
                return True
        total = len(row.prompt_ids) + len(row.token_ids)
        if len(row.token_ids) >= self.params.max_tokens or (self.max_positions and total >= self.max_positions):
            row.finish_reason = "length"
            row.text = self.text(row, row.token_ids)
            return True
        return False


@torch.inference_mode()
def _run_batch(model: PreTrainedModel, rows: list[_Row], params: SamplingParams, finisher: _Finisher) -> None:
    """Run one batch to completion, filling each row's tokens, text and finish reason."""
    device = _model_device(model)
    pad_id = finisher.tokenizer.pad_token_id if finisher.tokenizer.pad_token_id is not None else 0
    width = max(len(r.prompt_ids) for r in rows)

    # Left padding lines up every row's last prompt token in the final column, where the next token is read.
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, width - len(row.prompt_ids) :] = torch.tensor(row.prompt_ids)
        attention[i, width - len(row.prompt_ids) :] = 1
    # Positions count real tokens only, so a padded row sees the same positions as it would alone.
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    input_ids, attention, positions = input_ids.to(device), attention.to(device), positions.to(device)
    next_position = positions[:, -1] + 1

    extra = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
    # slots[i] is the row in batch slot i; None marks a finished row kept only because the cache cannot shrink.
    slots: list[int | None] = list(range(len(rows)))
    can_shrink = True
    cache = None
    step_ids, step_positions = input_ids, positions
    while True:
        out = model(
            input_ids=step_ids,
            attention_mask=attention,
            position_ids=step_positions,
            past_key_values=cache,
            use_cache=True,
            **extra,
        )
        cache = out.past_key_values
        live = [(slot, rows[r]) for slot, r in enumerate(slots) if r is not None]
        logits = out.logits[[slot for slot, _ in live], -1, :].float()
        chosen = next_tokens(logits, params, [row.generator for _, row in live]).tolist()

        tokens = torch.full((len(slots),), pad_id, dtype=torch.long)
        for (slot, row), token in zip(live, chosen):
            tokens[slot] = token
            if finisher.update(row, token):
                slots[slot] = None
        keep = [i for i, r in enumerate(slots) if r is not None]
        if not keep:
            return
        if can_shrink and len(keep) < len(slots):
            try:
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
            except (AttributeError, NotImplementedError, ValueError):
                can_shrink = False  # an exotic cache: keep finished rows, feeding them padding
            else:
                slots = [slots[i] for i in keep]
                tokens, attention, next_position = tokens[keep], attention[index], next_position[index]

        attention = torch.cat([attention, attention.new_ones((attention.shape[0], 1))], dim=-1)
        step_ids = tokens.to(device).unsqueeze(-1)
        step_positions = next_position.unsqueeze(-1)
        next_position = next_position + 1


def iter_generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    params: SamplingParams,
    skip: Iterable[tuple[int, int]] = (),
) -> Iterator[list[Completion]]:
    """Yield the completions of each finished batch (batch order, not prompt order).

    Pairs in `skip` are not returned; a batch made only of skipped pairs is not run. A batch with some skipped
    pairs still runs whole, so its numbers are exactly those of an uninterrupted run.
    """
    yield from iter_generate_ids(model, tokenizer, encode_prompts(tokenizer, prompts, params.chat_template), params, skip)


def iter_generate_ids(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[Sequence[int]],
    params: SamplingParams,
    skip: Iterable[tuple[int, int]] = (),
) -> Iterator[list[Completion]]:
    """`iter_generate` on prompts already tokenized (params.chat_template is not consulted)."""
    skip_set = set(skip)
    prompt_ids = [list(ids) for ids in prompt_ids]
    max_positions = context_length(model)
    if max_positions is not None:
        for index, ids in enumerate(prompt_ids):
            if len(ids) >= max_positions:
                raise ValueError(
                    f"prompt {index} is {len(ids)} tokens; the model's context is {max_positions} tokens"
                )
    finisher = _Finisher(tokenizer, params, eos_token_ids(model, tokenizer), max_positions)
    greedy = params.temperature == 0
    for batch in plan_batches([len(ids) for ids in prompt_ids], params.n, params.batch_size):
        if all(pair in skip_set for pair in batch):
            continue
        rows = [
            _Row(p, s, prompt_ids[p], None if greedy else row_generator(params.seed, p, s)) for p, s in batch
        ]
        _run_batch(model, rows, params, finisher)
        yield [r.completion() for r in rows if (r.prompt_index, r.sample_index) not in skip_set]


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    params: SamplingParams,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[Completion]:
    """All completions in (prompt_index, sample_index) order. `on_batch(done, total)` reports progress."""
    total = len(prompts) * params.n
    results: list[Completion] = []
    for batch in iter_generate(model, tokenizer, prompts, params):
        results.extend(batch)
        if on_batch is not None:
            on_batch(len(results), total)
    return sorted(results, key=lambda c: (c.prompt_index, c.sample_index))


# ----------------------------------------------------------------------------------------------- one streamed completion
#
# `distillery serve` answers one request at a time per completion: a single row, its text handed out as it
# grows, and optionally the log-probabilities of each token and of its most likely alternatives. The decoding
# rules are those above (same sampler, same per-row generator: seed s here samples what `generate` samples for
# prompt 0, sample 0 with seed s). Log-probabilities are the model's own distribution (raw logits, before
# temperature and filtering), as OpenAI-compatible servers report them.


class Cancelled(Exception):
    """The client went away; the completion was abandoned."""


class IncrementalDecoder:
    """The text each new token adds, never half a character.

    Decodes a short window (the tokens since the last text was read, plus the ones before that) instead of the
    whole completion, and compares it with the same window minus the new tokens. A token that ends in the
    middle of a UTF-8 character (byte-fallback pieces, byte-level BPE) adds no text until the character is
    complete. Concatenating what `push` and `flush` return gives the completion's text.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt_ids: Sequence[int]) -> None:
        self.tokenizer = tokenizer
        self.ids = list(prompt_ids[-_CONTEXT_TOKENS:])
        self.prefix = 0
        self.read = len(self.ids)
        self.window = 0

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def _added(self, window: Sequence[int], extra: Sequence[int]) -> str:
        before = self._decode(window)
        after = self._decode([*window, *extra])
        return after[len(before):] if len(after) > len(before) else ""

    def push(self, token: int) -> str:
        self.ids.append(token)
        self.window = self.prefix  # where the window that decoded this token starts (for alternative())
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before):]
        return ""

    def alternative(self, token: int) -> str:
        """The text `token` would have added in place of the last pushed one (for top log-probs)."""
        return self._added(self.ids[self.window : -1], [token])

    def flush(self) -> str:
        """Text still held back at the end (a character left incomplete is decoded as it stands)."""
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        self.prefix = self.read = len(self.ids)
        return after[len(before):] if len(after) > len(before) else ""


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of `text` could be the start of a stop string (so must not be sent yet)."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best


def _finite(logprob: float) -> float:
    """-inf (a token the model rules out) as OpenAI writes it: -9999."""
    return max(logprob, LOGPROB_FLOOR)


LOGPROB_FLOOR = -9999.0
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _token_bytes(tokenizer: PreTrainedTokenizerBase, token: int, text: str) -> list[int] | None:
    if text and "\ufffd" not in text:
        return list(text.encode("utf-8"))
    piece = tokenizer.convert_ids_to_tokens(token)
    match = _BYTE_PIECE.fullmatch(piece) if isinstance(piece, str) else None
    return [int(match.group(1), 16)] if match else None


@dataclass
class StreamedCompletion:
    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    # One entry per token whose text is part of `text` (the EOS token and tokens after a stop cut are not):
    # {"token", "logprob", "bytes", "top": [{"token", "logprob", "bytes"}, ...]}. None when not asked for.
    logprobs: list[dict[str, Any]] | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Release:
    """What of the text and the log-prob entries may be handed out: never text that might be a stop's start."""

    def __init__(self, stops: Sequence[str], on_delta: Callable[[str, list[dict[str, Any]]], None] | None) -> None:
        self.stops = stops
        self.on_delta = on_delta
        self.text = ""
        self.sent = 0
        self.pending: list[dict[str, Any]] = []
        self.released: list[dict[str, Any]] = []

    def add(self, delta: str, entry: dict[str, Any] | None) -> None:
        start = len(self.text)
        self.text += delta
        if entry is not None:
            entry["_span"] = (start, len(self.text))
            self.pending.append(entry)

    def find_stop(self, since: int) -> int | None:
        """Index of a stop string that ends after position `since`, if any."""
        if not self.stops:
            return None
        longest = max(len(s) for s in self.stops)
        offset = max(0, since - longest + 1)
        cut = find_stop(self.text[offset:], self.stops)
        return None if cut is None else offset + cut

    def step(self) -> None:
        self._release(len(self.text) - held_back(self.text, self.stops), final=False)

    def finish(self, end: int) -> None:
        self.text = self.text[:end]
        self._release(end, final=True)

    def _release(self, upto: int, final: bool) -> None:
        entries = []
        while self.pending:
            start, end = self.pending[0]["_span"]
            if end <= upto or (final and start < upto):
                entries.append(self._public(self.pending.pop(0)))
            else:
                break
        if final:
            self.pending.clear()
        text = self.text[self.sent : upto] if upto > self.sent else ""
        self.sent = max(self.sent, upto)
        self.released.extend(entries)
        if self.on_delta is not None and (text or entries):
            self.on_delta(text, entries)

    @staticmethod
    def _public(entry: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in entry.items() if k != "_span"}


@torch.inference_mode()
def stream_completion(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[int],
    params: SamplingParams,
    top_logprobs: int | None = None,
    on_delta: Callable[[str, list[dict[str, Any]]], None] | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> StreamedCompletion:
    """Generate one completion of `prompt_ids`, calling `on_delta(text, logprob_entries)` as it grows.

    `params.n` must be 1. `top_logprobs` None: no log-probs; k >= 0: each token's log-prob and its k most likely
    alternatives. Text that could be the start of a stop string is held back until it is known not to be, so
    the deltas concatenate to exactly the returned text. `cancelled()` is polled every token; when it returns
    true, Cancelled is raised.
    """
    if params.n != 1:
        raise ValueError("stream_completion makes one completion (n must be 1)")
    prompt_ids = list(prompt_ids)
    if not prompt_ids:
        raise ValueError("the prompt encodes to no tokens, so there is nothing to condition on")
    max_positions = context_length(model)
    if max_positions is not None and len(prompt_ids) >= max_positions:
        raise ValueError(
            f"the prompt is {len(prompt_ids)} tokens; the model's context is {max_positions} tokens"
        )
    device = _model_device(model)
    eos_ids = frozenset(eos_token_ids(model, tokenizer))
    generator = None if params.temperature == 0 else row_generator(params.seed, 0, 0)
    decoder = IncrementalDecoder(tokenizer, prompt_ids)
    release = _Release(params.stop, on_delta)
    extra = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}

    cache = None
    step_ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    generated = 0
    finish: FinishReason | None = None
    cut: int | None = None
    while finish is None:
        if cancelled is not None and cancelled():
            raise Cancelled("the request was cancelled")
        out = model(input_ids=step_ids, past_key_values=cache, use_cache=True, **extra)
        cache = out.past_key_values
        logits = out.logits[:, -1, :].float()
        token = int(next_tokens(logits, params, [generator]).item())
        generated += 1
        if token in eos_ids:
            finish = "eos"
            break
        start = len(release.text)
        delta = decoder.push(token)
        entry = None
        if top_logprobs is not None:
            logprobs = torch.log_softmax(logits[0], dim=-1)
            top: list[dict[str, Any]] = []
            if top_logprobs > 0:
                values, indices = torch.topk(logprobs, min(top_logprobs, logprobs.shape[-1]))
                for value, index in zip(values.tolist(), indices.tolist()):
                    alt = delta if index == token else decoder.alternative(index)
                    top.append({"token": alt, "logprob": _finite(value), "bytes": _token_bytes(tokenizer, index, alt)})
            entry = {
                "token": delta,
                "logprob": _finite(float(logprobs[token])),
                "bytes": _token_bytes(tokenizer, token, delta),
                "top": top,
            }
        release.add(delta, entry)
        cut = release.find_stop(start)
        if cut is not None:
            finish = "stop"
            break
        total = len(prompt_ids) + generated
        if generated >= params.max_tokens or (max_positions is not None and total >= max_positions):
            finish = "length"
            break
        release.step()
        step_ids = torch.tensor([[token]], dtype=torch.long, device=device)

    if finish != "stop":
        # A character left incomplete at the very end; it may complete a stop string too.
        start = len(release.text)
        release.add(decoder.flush(), None)
        cut = release.find_stop(start)
        if cut is not None:
            finish = "stop"
    release.finish(cut if cut is not None else len(release.text))
    return StreamedCompletion(
        text=release.text,
        finish_reason=finish,
        prompt_tokens=len(prompt_ids),
        completion_tokens=generated,
        logprobs=release.released if top_logprobs is not None else None,
    )
