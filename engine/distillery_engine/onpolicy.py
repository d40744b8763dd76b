"""The `onpolicy` job: on-policy distillation — SDFT, OPSD, and GKD-style distillation from another model.

One optimizer step (docs/onpolicy-job.md has the spec):
1. Take the step's prompts (a seeded permutation per epoch, as in the train job).
2. The student samples rollouts from its current weights on the *student* prompt (on-policy). With lmbda < 1
   some steps are off-policy instead: the record's `completion`, or a sample from the teacher.
3. The teacher runs forward on [teacher prompt ; rollout] without gradients, the student on
   [student prompt ; rollout] with gradients. The rollout's token ids are used verbatim on both sides (never
   re-tokenized), and each sequence is left-padded whole, so padding never sits between prompt and rollout.
4. Loss: a per-token divergence between the two next-token distributions at every rollout position
   (losses.py has the conventions), optionally over the top-k ids or on the sampled token only, with an
   optional per-entry clip, the first `skip_tokens` rollout tokens dropped, reduced per token or per sequence
   over the whole step (micro-batches only change memory use).
5. AdamW step; then the EMA teacher, if any, moves towards the student.

Teachers: `frozen` (the initial weights: with LoRA the same network with its adapters disabled, otherwise a
copy taken before training), `ema` (a copy — with LoRA only the adapter tensors — updated
φ ← (1 − rate)·φ + rate·θ every `ema_every` steps), `live` (the current student, under no_grad), or a separate
`teacher_model` (always frozen; it must share the student's tokenizer).

Resume is exact: rollouts draw from per-(step, micro-batch, row) random streams and the checkpoint holds the
trainable weights, optimizer, scheduler, RNG states and the EMA teacher, so a killed run continues the same
trajectory (bit-identical on CPU).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import random
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .events import EventLog
from .generate import (
    SamplingParams,
    accepts_logits_to_keep,
    context_length,
    encode_continuation,
    eos_token_ids,
    iter_generate_ids,
)
from .losses import (
    clip_pointwise,
    divergence_terms,
    kind_from_beta,
    log_probs,
    loss_keep_mask,
    sampled_token_reverse_kl,
    topk_log_probs,
)
from .models import Placement, check_model_dir, count_parameters, load_model, load_tokenizer
from .train import (
    LoraSpec,
    apply_lora,
    autocast_context,
    check_float,
    check_int,
    check_same_run,
    data_position,
    finished_or_cleaned,
    fingerprint_of,
    is_number,
    list_checkpoints,
    load_checkpoint,
    lr_factor,
    make_optimizer,
    save_checkpoint,
    save_final,
    seed_everything,
    spec_with_defaults,
    step_microbatches,
    steps_per_epoch,
    trainable_named_parameters,
    training_placement,
    validate_lora,
    write_json_atomic,
)

WHERE = "onpolicy spec"

CHAT_DEFAULTS: dict[str, Any] = {"enabled": False, "enable_thinking": None}
SAMPLING_DEFAULTS: dict[str, Any] = {
    "n": 1, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "max_tokens": 2048, "stop": [],
    "batch_size": 32,
}
LOSS_DEFAULTS: dict[str, Any] = {
    "divergence": "forward_kl", "beta": 0.5, "temperature": 1.0, "estimator": "full", "topk": 20,
    "topk_support": "teacher", "topk_tail": False, "clip": None, "skip_tokens": 0, "reduction": "token_mean",
}
TEACHER_DEFAULTS: dict[str, Any] = {"kind": "frozen", "ema_rate": 0.01, "ema_every": 1}
DEFAULTS: dict[str, Any] = {
    "type": "onpolicy",
    "model": None,
    "teacher_model": None,
    "student_chat": CHAT_DEFAULTS,
    "teacher_chat": CHAT_DEFAULTS,
    "teacher_prefill": "",
    "max_prompt_len": 2048,
    "max_teacher_prompt_len": 8192,
    "sampling": SAMPLING_DEFAULTS,
    "loss": LOSS_DEFAULTS,
    "teacher": TEACHER_DEFAULTS,
    "lmbda": 1.0,
    "lora": None,
    "lr": 1e-5,
    "min_lr": 0.0,
    "warmup_steps": 0,
    "lr_schedule": "cosine",
    "max_steps": None,
    "epochs": None,
    "batch_size": 8,
    "grad_accum": 1,
    "max_grad_norm": 1.0,
    "weight_decay": 0.0,
    "betas": [0.9, 0.999],
    "seed": 0,
    "checkpoint_every": 25,
    "record_every": 25,
    "device": None,
    "dtype": None,
}
REQUIRED = ("output_dir", "model", "data")
RESUMABLE_CHANGES = frozenset({"output_dir", "device", "dtype", "checkpoint_every", "record_every"})
# Token ids shown on each side of the prompt/completion boundary in boundaries.jsonl.
BOUNDARY_TOKENS = 16


# ----------------------------------------------------------------------------------------------------------
# The spec


@dataclass(frozen=True)
class ChatSide:
    enabled: bool
    enable_thinking: bool | None


@dataclass(frozen=True)
class LossSpec:
    kind: str  # forward_kl | reverse_kl | jsd (after mapping)
    beta: float
    temperature: float
    estimator: str
    topk: int
    topk_support: str
    topk_tail: bool
    clip: float | None
    skip_tokens: int
    reduction: str


@dataclass(frozen=True)
class TeacherSpec:
    kind: str
    ema_rate: float
    ema_every: int


@dataclass(frozen=True)
class OnPolicySpec:
    output_dir: Path
    data: Path
    model: Path
    teacher_model: Path | None
    student_chat: ChatSide
    teacher_chat: ChatSide
    teacher_prefill: str
    max_prompt_len: int
    max_teacher_prompt_len: int
    sampling: SamplingParams
    loss: LossSpec
    teacher: TeacherSpec
    lmbda: float
    lora: LoraSpec | None
    lr: float
    min_lr: float
    warmup_steps: int
    lr_schedule: str
    max_steps: int | None
    epochs: int | None
    batch_size: int
    grad_accum: int
    max_grad_norm: float | None
    weight_decay: float
    betas: tuple[float, float]
    seed: int
    checkpoint_every: int | None
    record_every: int | None
    device: str | None
    dtype: str | None


def _section(spec: dict[str, Any], key: str, defaults: dict[str, Any]) -> dict[str, Any]:
    value = spec.get(key, defaults)
    if not isinstance(value, dict):
        raise ValueError(f"{WHERE}: {key} must be an object, got {value!r}")
    unknown = sorted(set(value) - set(defaults))
    if unknown:
        raise ValueError(f"{WHERE}: unknown {key} keys {unknown}; known: {sorted(defaults)}")
    return {**defaults, **value}


def _chat(spec: dict[str, Any], key: str) -> ChatSide:
    c = _section(spec, key, CHAT_DEFAULTS)
    if not isinstance(c["enabled"], bool):
        raise ValueError(f"{WHERE}: {key}.enabled must be true or false, got {c['enabled']!r}")
    if c["enable_thinking"] is not None and not isinstance(c["enable_thinking"], bool):
        raise ValueError(f"{WHERE}: {key}.enable_thinking must be true, false or null, got {c['enable_thinking']!r}")
    return ChatSide(c["enabled"], c["enable_thinking"])


def _loss(spec: dict[str, Any]) -> LossSpec:
    s = _section(spec, "loss", LOSS_DEFAULTS)
    divergence, beta = s["divergence"], s["beta"]
    if divergence not in ("forward_kl", "reverse_kl", "jsd"):
        raise ValueError(f"{WHERE}: loss.divergence must be forward_kl, reverse_kl or jsd, got {divergence!r}")
    if divergence == "jsd":
        if not is_number(beta) or not 0 <= beta <= 1:
            raise ValueError(f"{WHERE}: loss.beta must be in [0, 1], got {beta!r}")
        kind, beta = kind_from_beta(float(beta))  # GKD/TRL endpoints: 0 = forward KL, 1 = reverse KL
    else:
        kind, beta = divergence, 0.5
    estimator = s["estimator"]
    if estimator not in ("full", "topk", "sampled_token"):
        raise ValueError(f"{WHERE}: loss.estimator must be full, topk or sampled_token, got {estimator!r}")
    if estimator == "sampled_token" and kind != "reverse_kl":
        raise ValueError(f"{WHERE}: the sampled_token estimator exists for reverse_kl only (forward KL needs "
                         f"samples from the teacher); got divergence {divergence!r}")
    clip = s["clip"]
    if clip is not None:
        clip = check_float(clip, "loss.clip", 0.0, strictly=True, where=WHERE)
        if estimator == "sampled_token":
            raise ValueError(f"{WHERE}: loss.clip is a per-vocabulary-entry clip; it does not apply to sampled_token")
    if s["topk_support"] not in ("teacher", "student"):
        raise ValueError(f"{WHERE}: loss.topk_support must be teacher or student, got {s['topk_support']!r}")
    if not isinstance(s["topk_tail"], bool):
        raise ValueError(f"{WHERE}: loss.topk_tail must be true or false, got {s['topk_tail']!r}")
    if s["reduction"] not in ("token_mean", "sequence_mean"):
        raise ValueError(f"{WHERE}: loss.reduction must be token_mean or sequence_mean, got {s['reduction']!r}")
    return LossSpec(
        kind=kind,
        beta=float(beta),
        temperature=check_float(s["temperature"], "loss.temperature", 0.0, strictly=True, where=WHERE),
        estimator=estimator,
        topk=check_int(s["topk"], "loss.topk", 1, WHERE),
        topk_support=s["topk_support"],
        topk_tail=s["topk_tail"],
        clip=clip,
        skip_tokens=check_int(s["skip_tokens"], "loss.skip_tokens", 0, WHERE),
        reduction=s["reduction"],
    )


def _teacher(spec: dict[str, Any]) -> TeacherSpec:
    t = _section(spec, "teacher", TEACHER_DEFAULTS)
    if t["kind"] not in ("frozen", "ema", "live"):
        raise ValueError(f"{WHERE}: teacher.kind must be frozen, ema or live, got {t['kind']!r}")
    rate = t["ema_rate"]
    if not is_number(rate) or not 0 < rate <= 1:
        raise ValueError(f"{WHERE}: teacher.ema_rate must be in (0, 1], got {rate!r}")
    return TeacherSpec(t["kind"], float(rate), check_int(t["ema_every"], "teacher.ema_every", 1, WHERE))


def _sampling(spec: dict[str, Any]) -> SamplingParams:
    s = _section(spec, "sampling", SAMPLING_DEFAULTS)
    if s["temperature"] == 0 and s["n"] > 1:
        raise ValueError(f"{WHERE}: sampling.n > 1 with temperature 0 gives identical rollouts")
    try:
        return SamplingParams.from_dict(s)
    except ValueError as exc:
        raise ValueError(f"{WHERE}: sampling: {exc}") from None


def validate_spec(spec: dict[str, Any]) -> OnPolicySpec:
    """Check an onpolicy job spec and fill in defaults. Raises ValueError / FileNotFoundError with a clear message."""
    s, data = spec_with_defaults(spec, DEFAULTS, REQUIRED, "onpolicy", WHERE)
    max_steps = None if s["max_steps"] is None else check_int(s["max_steps"], "max_steps", 1, WHERE)
    epochs = None if s["epochs"] is None else check_int(s["epochs"], "epochs", 1, WHERE)
    if (max_steps is None) == (epochs is None):
        raise ValueError(f"{WHERE}: give exactly one of 'max_steps' and 'epochs'")
    lr = check_float(s["lr"], "lr", 0.0, strictly=True, where=WHERE)
    min_lr = check_float(s["min_lr"], "min_lr", 0.0, where=WHERE)
    if min_lr > lr:
        raise ValueError(f"{WHERE}: min_lr ({min_lr}) must not exceed lr ({lr})")
    betas = s["betas"]
    if not (isinstance(betas, (list, tuple)) and len(betas) == 2 and all(is_number(b) and 0 <= b < 1 for b in betas)):
        raise ValueError(f"{WHERE}: betas must be two numbers in [0, 1), got {betas!r}")
    if s["lr_schedule"] not in ("cosine", "linear"):
        raise ValueError(f"{WHERE}: lr_schedule must be cosine or linear, got {s['lr_schedule']!r}")
    lmbda = s["lmbda"]
    if not is_number(lmbda) or not 0 <= lmbda <= 1:
        raise ValueError(f"{WHERE}: lmbda (the on-policy fraction) must be in [0, 1], got {lmbda!r}")
    if not isinstance(s["teacher_prefill"], str):
        raise ValueError(f"{WHERE}: teacher_prefill must be a string, got {s['teacher_prefill']!r}")
    for key in ("device", "dtype"):
        if s[key] is not None and not isinstance(s[key], str):
            raise ValueError(f"{WHERE}: {key} must be a string or null, got {s[key]!r}")
    optional_every = {k: None if s[k] is None else check_int(s[k], k, 1, WHERE) for k in ("checkpoint_every", "record_every")}
    return OnPolicySpec(
        output_dir=Path(s["output_dir"]),
        data=data,
        model=check_model_dir(s["model"]),
        teacher_model=None if s["teacher_model"] is None else check_model_dir(s["teacher_model"]),
        student_chat=_chat(spec, "student_chat"),
        teacher_chat=_chat(spec, "teacher_chat"),
        teacher_prefill=s["teacher_prefill"],
        max_prompt_len=check_int(s["max_prompt_len"], "max_prompt_len", 1, WHERE),
        max_teacher_prompt_len=check_int(s["max_teacher_prompt_len"], "max_teacher_prompt_len", 1, WHERE),
        sampling=_sampling(spec),
        loss=_loss(spec),
        teacher=_teacher(spec),
        lmbda=float(lmbda),
        lora=validate_lora(s["lora"], WHERE),
        lr=lr,
        min_lr=min_lr,
        warmup_steps=check_int(s["warmup_steps"], "warmup_steps", 0, WHERE),
        lr_schedule=s["lr_schedule"],
        max_steps=max_steps,
        epochs=epochs,
        batch_size=check_int(s["batch_size"], "batch_size", 1, WHERE),
        grad_accum=check_int(s["grad_accum"], "grad_accum", 1, WHERE),
        max_grad_norm=None if s["max_grad_norm"] is None else check_float(s["max_grad_norm"], "max_grad_norm", 0.0, strictly=True, where=WHERE),
        weight_decay=check_float(s["weight_decay"], "weight_decay", 0.0, where=WHERE),
        betas=(float(betas[0]), float(betas[1])),
        seed=check_int(s["seed"], "seed", 0, WHERE),
        checkpoint_every=optional_every["checkpoint_every"],
        record_every=optional_every["record_every"],
        device=s["device"],
        dtype=s["dtype"],
    )


# ----------------------------------------------------------------------------------------------------------
# Records and prompts


@dataclass(frozen=True)
class Prompt:
    text: str  # exactly what was tokenized (chat template applied, prefill appended)
    ids: list[int]


@dataclass(frozen=True)
class Record:
    line: int
    student: Prompt
    teacher: Prompt
    completion: str | None


def render_prompt(tokenizer: PreTrainedTokenizerBase, text: str, chat: ChatSide, prefill: str = "") -> Prompt:
    """Token ids of one side's prompt. Chat: `text` as the user message, the assistant turn opened (the template
    writes its own special tokens); otherwise the raw text with the tokenizer's default special tokens (BOS).
    `prefill` is appended as a continuation (e.g. a teacher's opening "<think>\\n")."""
    if chat.enabled:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(f"{WHERE}: a chat template is enabled but this tokenizer has none; disable it for a base model")
        kwargs = {} if chat.enable_thinking is None else {"enable_thinking": chat.enable_thinking}
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True, **kwargs
        )
        assert isinstance(rendered, str)
        ids = list(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    else:
        rendered = text
        ids = list(tokenizer(text)["input_ids"])
    if prefill:
        rendered += prefill
        ids += encode_continuation(tokenizer, prefill)
    return Prompt(rendered, ids)


def load_records(ts: OnPolicySpec, tokenizer: PreTrainedTokenizerBase, context: int | None) -> list[Record]:
    """Read and tokenize the data file; every problem names its line."""
    records: list[Record] = []
    room = ts.sampling.max_tokens
    for number, line in enumerate(ts.data.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{ts.data}:{number}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not valid JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: each line must be a JSON object")
        for key in ("student", "teacher"):
            if not isinstance(rec.get(key), str) or not rec[key]:
                raise ValueError(f'{where}: needs a non-empty string field "{key}"')
        extra = sorted(set(rec) - {"student", "teacher", "completion"})
        if extra:
            raise ValueError(f"{where}: unknown fields {extra}")
        completion = rec.get("completion")
        if completion is not None and (not isinstance(completion, str) or not completion):
            raise ValueError(f'{where}: "completion" must be a non-empty string when present')
        student = render_prompt(tokenizer, rec["student"], ts.student_chat)
        teacher = render_prompt(tokenizer, rec["teacher"], ts.teacher_chat, ts.teacher_prefill)
        for side, prompt, limit in (("student", student, ts.max_prompt_len), ("teacher", teacher, ts.max_teacher_prompt_len)):
            if len(prompt.ids) > limit:
                raise ValueError(f"{where}: the {side} prompt is {len(prompt.ids)} tokens, over the limit of {limit}")
            if context is not None and len(prompt.ids) + room > context:
                raise ValueError(
                    f"{where}: the {side} prompt ({len(prompt.ids)} tokens) plus max_tokens ({room}) exceeds the "
                    f"model's context of {context} tokens; shorten the prompt or lower max_tokens"
                )
        records.append(Record(number, student, teacher, completion))
    if not records:
        raise ValueError(f"{ts.data} holds no records")
    return records


# ----------------------------------------------------------------------------------------------------------
# Forward passes and the loss


def completion_logits(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    pad_id: int,
    placement: Placement,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits predicting each completion token, and its mask, both right-aligned: ``[B, L, V]``, ``[B, L]``.

    Each row is [prompt ; completion], left-padded to a common width so every row ends in the last column and
    padding never sits between prompt and completion; position ids count real tokens only. Row i's completion
    token t (0-based) sits at column L − len_i + t of the result.
    """
    width = max(len(p) + len(c) for p, c in zip(prompts, completions))
    longest = max(len(c) for c in completions)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros((len(prompts), longest), dtype=torch.bool)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        row = [*p, *c]
        input_ids[i, width - len(row):] = torch.tensor(row)
        attention[i, width - len(row):] = 1
        mask[i, longest - len(c):] = True
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    device = placement.device
    extra: dict[str, Any] = {}
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if accepts_logits_to_keep(inner):
        extra["logits_to_keep"] = longest + 1  # logits at column j predict token j + 1
    with autocast_context(placement):
        logits = model(
            input_ids=input_ids.to(device), attention_mask=attention.to(device), position_ids=positions.to(device),
            use_cache=False, **extra,
        ).logits
    return logits[:, -(longest + 1):-1], mask.to(device)


def right_aligned(completions: Sequence[Sequence[int]], device: torch.device) -> torch.Tensor:
    """Completion token ids in the right-aligned ``[B, L]`` layout of `completion_logits` (0 where masked)."""
    longest = max(len(c) for c in completions)
    tokens = torch.zeros((len(completions), longest), dtype=torch.long)
    for i, c in enumerate(completions):
        tokens[i, longest - len(c):] = torch.tensor(list(c))
    return tokens.to(device)


@dataclass
class LossParts:
    """A micro-batch's share of the step loss, and sums for the step's metrics (all but `loss` detached)."""

    loss: torch.Tensor
    kl_sum: float
    entropy_sum: float
    clipped: float
    clip_entries: float
    tokens: int


def per_token_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, tokens: torch.Tensor, keep: torch.Tensor, spec: LossSpec
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float, float]:
    """(per-token loss [B, L], its unclipped full-vocabulary divergence [B, L] (detached), student entropy
    [B, L] (detached), and clipped / total entry counts over `keep`)."""
    log_s = log_probs(student_logits, spec.temperature)
    log_t = log_probs(teacher_logits.detach(), spec.temperature)
    with torch.no_grad():
        entropy = -(log_s.detach().exp() * log_s.detach().nan_to_num(neginf=0.0)).sum(-1)
    clipped = entries = 0.0
    if spec.estimator != "full":
        with torch.no_grad():  # the logged KL is always the full-vocabulary divergence
            full = divergence_terms(log_s.detach(), log_t, spec.kind, spec.beta).sum(-1)  # type: ignore[arg-type]
    if spec.estimator == "sampled_token":
        per_token = sampled_token_reverse_kl(student_logits, teacher_logits, tokens, spec.temperature).surrogate
        return per_token, full, entropy, keep, clipped, entries
    if spec.estimator == "topk":
        log_s, log_t = topk_log_probs(log_s, log_t, spec.topk, spec.topk_support, spec.topk_tail)  # type: ignore[arg-type]
    terms = divergence_terms(log_s, log_t, spec.kind, spec.beta)  # type: ignore[arg-type]
    if spec.estimator == "full":
        full = terms.detach().sum(-1)  # before clipping: the logged KL is the unclipped divergence
    if spec.clip is not None:
        terms, was_clipped = clip_pointwise(terms, spec.clip)
        clipped = float((was_clipped.sum(-1) * keep).sum())
        entries = float(keep.sum()) * terms.shape[-1]
    return terms.sum(-1), full, entropy, keep, clipped, entries


def micro_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    tokens: torch.Tensor,
    mask: torch.Tensor,
    spec: LossSpec,
    denominator: float,
) -> LossParts:
    """This micro-batch's part of the step loss. `denominator`: the step's kept tokens (token_mean) or its
    sequences with a kept token (sequence_mean), so the parts of all micro-batches add up to the step loss."""
    keep = loss_keep_mask(mask, spec.skip_tokens)
    per_token, full, entropy, keep, clipped, entries = per_token_loss(student_logits, teacher_logits, tokens, keep, spec)
    values = torch.where(keep, per_token, torch.zeros_like(per_token))
    if spec.reduction == "token_mean":
        total = values.sum()
    else:
        counts = keep.sum(-1)
        total = (values.sum(-1) / counts.clamp(min=1)).sum()
    zero = torch.zeros_like(full)
    return LossParts(
        loss=total / max(denominator, 1.0),
        kl_sum=float(torch.where(keep, full, zero).sum()),
        entropy_sum=float(torch.where(keep, entropy, zero).sum()),
        clipped=clipped,
        clip_entries=entries,
        tokens=int(keep.sum()),
    )


# ----------------------------------------------------------------------------------------------------------
# Teachers


class Teacher:
    """Gives the teacher network for a forward pass, and keeps an EMA teacher up to date."""

    def __init__(self, ts: OnPolicySpec, student: torch.nn.Module, placement: Placement) -> None:
        self.kind = "separate" if ts.teacher_model is not None else ts.teacher.kind
        self.spec = ts.teacher
        self.lora = ts.lora is not None
        self.student = student
        self.copy: torch.nn.Module | None = None  # a separate network (separate model, or a full-FT frozen/EMA copy)
        self.ema: dict[str, torch.Tensor] = {}  # EMA of the trainable tensors (LoRA: adapters only)
        if ts.teacher_model is not None:
            self.copy, _ = load_model(ts.teacher_model, placement=placement)
        elif self.kind in ("frozen", "ema") and not self.lora:
            self.copy = copy.deepcopy(student)  # the initial weights; taken before any checkpoint is loaded
        if self.copy is not None:
            self.copy.eval()
            self.copy.requires_grad_(False)
        if self.kind == "ema":
            names = {n for n, _ in trainable_named_parameters(student)}
            if self.copy is not None:  # full FT: the copy's own parameters are the EMA
                self.ema = {n: p.data for n, p in self.copy.named_parameters() if n in names}
            else:  # LoRA: EMA copies of the adapter tensors, swapped in for teacher passes
                self.ema = {n: p.detach().clone() for n, p in student.named_parameters() if n in names}

    @contextlib.contextmanager
    def network(self) -> Iterator[torch.nn.Module]:
        """The teacher, in eval mode; the caller runs it under no_grad."""
        was_training = self.student.training
        self.student.eval()
        try:
            if self.copy is not None:  # a separate model, or the full-FT frozen/EMA copy
                yield self.copy
            elif self.kind == "frozen":  # LoRA: the same network with its adapters off is θ0
                with self.student.disable_adapter():  # type: ignore[operator]
                    yield self.student
            elif self.kind == "ema":  # LoRA: swap the EMA adapter tensors in, without copying
                with self._swapped_adapters():
                    yield self.student
            else:  # live
                yield self.student
        finally:
            self.student.train(was_training)

    @contextlib.contextmanager
    def _swapped_adapters(self) -> Iterator[None]:
        params = dict(self.student.named_parameters())
        saved = {n: params[n].data for n in self.ema}
        try:
            for name, value in self.ema.items():
                params[name].data = value
            yield
        finally:
            for name, value in saved.items():
                params[name].data = value

    def after_step(self, step: int) -> None:
        """EMA update φ ← (1 − rate)·φ + rate·θ after optimizer step `step` (1-based), every `ema_every` steps."""
        if self.kind != "ema" or step % self.spec.ema_every:
            return
        params = dict(self.student.named_parameters())
        with torch.no_grad():
            for name, value in self.ema.items():
                ema_update(value, params[name].detach(), self.spec.ema_rate)

    def state(self) -> dict[str, dict[str, torch.Tensor]]:
        return {"ema_teacher": self.ema} if self.ema else {}

    def load_state(self, checkpoint: Path) -> None:
        if not self.ema:
            return
        saved = load_file(str(checkpoint / "ema_teacher.safetensors"))
        if set(saved) != set(self.ema):
            raise ValueError(f"{checkpoint}: the EMA teacher does not match the model's trainable parameters")
        with torch.no_grad():
            for name, value in saved.items():
                self.ema[name].copy_(value)


def ema_update(ema: torch.Tensor, current: torch.Tensor, rate: float) -> None:
    """In place: ema ← (1 − rate)·ema + rate·current."""
    ema.mul_(1.0 - rate).add_(current.to(ema.dtype), alpha=rate)


# ----------------------------------------------------------------------------------------------------------
# Rollouts


@dataclass(frozen=True)
class Rollout:
    record: Record
    token_ids: list[int]
    finish_reason: str


def step_seed(seed: int, step: int, micro: int) -> int:
    digest = hashlib.sha256(f"distillery-onpolicy:{seed}:{step}:{micro}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def is_on_policy(seed: int, step: int, lmbda: float) -> bool:
    """Whether optimizer step `step` (0-based) samples from the student: a seeded draw per step."""
    if lmbda >= 1.0:
        return True
    return random.Random(f"{seed}:{step}").random() < lmbda


def sample_rollouts(
    network: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[list[int]],
    records: Sequence[Record],
    params: SamplingParams,
) -> list[Rollout]:
    """`params.n` rollouts per prompt, in (prompt, sample) order."""
    out: list[Rollout] = []
    for batch in iter_generate_ids(network, tokenizer, prompts, params):  # type: ignore[arg-type]
        out.extend(batch)  # type: ignore[arg-type]
    ordered = sorted(out, key=lambda c: (c.prompt_index, c.sample_index))  # type: ignore[attr-defined]
    return [Rollout(records[c.prompt_index], list(c.token_ids), c.finish_reason) for c in ordered]  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------------------------------------
# The job


def _boundary(tokenizer: PreTrainedTokenizerBase, prompt: Prompt, completion: Sequence[int]) -> dict[str, Any]:
    tail, head = prompt.ids[-BOUNDARY_TOKENS:], list(completion[:BOUNDARY_TOKENS])
    return {
        "prompt_text": prompt.text,
        "prompt_tokens": len(prompt.ids),
        "prompt_tail_ids": tail,
        "prompt_tail_pieces": tokenizer.convert_ids_to_tokens(tail),
        "completion_head_ids": head,
        "completion_head_pieces": tokenizer.convert_ids_to_tokens(head),
    }


def _rewrite_jsonl_upto(path: Path, step: int) -> None:
    """Keep the lines of steps <= `step` (a resumed run rewrites what came after its checkpoint)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
    write_text = "".join(f"{line}\n" for line in kept)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_text(write_text)
    tmp.replace(path)


def _append_jsonl(path: Path, obj: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(obj) + "\n")


def _mean_kl(metrics: Path, first: bool, count: int = 5) -> float | None:
    if not metrics.is_file():
        return None
    values = [json.loads(line)["kl"] for line in metrics.read_text().splitlines() if line.strip()]
    count = max(1, min(count, len(values) // 2))
    picked = values[:count] if first else values[-count:]
    return sum(picked) / len(picked) if picked else None


def run(spec: dict[str, Any], events: EventLog) -> dict[str, Any]:
    """Run (or resume, or recognise as finished) an onpolicy job; emit progress, log and checkpoint events.

    Returns the fields of the `done` event (docs/onpolicy-job.md)."""
    ts = validate_spec(spec)
    placement = training_placement(ts.device, ts.dtype, WHERE)
    out = ts.output_dir
    fingerprint = fingerprint_of(spec, ts.data, DEFAULTS, RESUMABLE_CHANGES)
    final_dir, adapter_dir, done_file = out / "final", out / "adapter", out / "done.json"
    ckpt_root, metrics_file, boundaries_file = out / "checkpoints", out / "metrics.jsonl", out / "boundaries.jsonl"
    finished = finished_or_cleaned(out, fingerprint, events)
    if finished is not None:
        return finished

    model, tokenizer = load_model(ts.model, placement=placement, for_training=True)
    pad_id = tokenizer.pad_token_id
    assert pad_id is not None  # load_tokenizer guarantees one
    if ts.teacher_model is not None:
        teacher_tokenizer = load_tokenizer(ts.teacher_model)
        if teacher_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise ValueError(f"{WHERE}: the teacher's tokenizer differs from the student's; on-policy distillation "
                             "compares next-token distributions id by id, so both must share one vocabulary")
    context = context_length(model)
    records = load_records(ts, tokenizer, context)
    eos_ids = eos_token_ids(model, tokenizer)

    if ts.lora is not None:
        model = apply_lora(model, ts.lora, ts.seed)
    teacher = Teacher(ts, model, placement)  # before any checkpoint is loaded: frozen/EMA start from θ0
    total_params = count_parameters(model)
    trainable = sum(p.numel() for _, p in trainable_named_parameters(model))
    per_epoch = steps_per_epoch(len(records), ts.batch_size, ts.grad_accum)
    total_steps = ts.max_steps if ts.max_steps is not None else (ts.epochs or 1) * per_epoch
    optimizer = make_optimizer(model, ts.lr, ts.betas, ts.weight_decay)
    min_ratio = ts.min_lr / ts.lr
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, ts.warmup_steps, total_steps, min_ratio, ts.lr_schedule)
    )

    seed_everything(ts.seed)
    step, elapsed, last_loss = 0, 0.0, float("nan")
    checkpoints = list_checkpoints(ckpt_root)
    if checkpoints:
        saved = json.loads((checkpoints[-1] / "meta.json").read_text())
        check_same_run(saved["fingerprint"], fingerprint, checkpoints[-1])
        state = load_checkpoint(checkpoints[-1], model, optimizer, scheduler)
        teacher.load_state(checkpoints[-1])
        step, elapsed, last_loss = state["step"], state["seconds"], state["loss"]
        events.emit("log", message=f"resumed from {checkpoints[-1]}", step=step)
    else:
        for f in (metrics_file, boundaries_file):
            f.unlink(missing_ok=True)
    _rewrite_jsonl_upto(metrics_file, step)
    _rewrite_jsonl_upto(boundaries_file, step)
    events.emit(
        "log", message="training", records=len(records), total_steps=total_steps, steps_per_epoch=per_epoch,
        parameters=total_params, trainable_parameters=trainable, teacher=teacher.kind, device=str(placement.device),
        loss=ts.loss.kind, estimator=ts.loss.estimator,
    )

    model.train()
    params = [p for _, p in trainable_named_parameters(model)]
    clip = ts.max_grad_norm if ts.max_grad_norm is not None else math.inf
    while step < total_steps:
        started = time.perf_counter()
        on_policy = is_on_policy(ts.seed, step, ts.lmbda)
        micro_batches = step_microbatches(step, len(records), ts.batch_size, ts.grad_accum, ts.seed)

        # 1. Rollouts of the whole step, all from the weights before this step's update.
        rollouts: list[list[Rollout]] = []
        for micro, indices in enumerate(micro_batches):
            batch = [records[i] for i in indices]
            params_m = dataclasses.replace(ts.sampling, seed=step_seed(ts.seed, step, micro))
            if on_policy:
                with torch.no_grad():
                    was = model.training
                    model.eval()
                    rollouts.append(sample_rollouts(model, tokenizer, [r.student.ids for r in batch], batch, params_m))
                    model.train(was)
            else:
                rollouts.append(_off_policy(batch, tokenizer, teacher, params_m, eos_ids))
        rollout_seconds = time.perf_counter() - started

        # 2. The step's denominators, known before any forward pass.
        masks = [loss_keep_mask(_length_mask(r), ts.loss.skip_tokens) for r in rollouts]
        if ts.loss.reduction == "token_mean":
            denominator = float(sum(int(m.sum()) for m in masks))
        else:
            denominator = float(sum(int((m.sum(-1) > 0).sum()) for m in masks))

        # 3. Teacher and student forwards, backward per micro-batch.
        optimizer.zero_grad(set_to_none=True)
        loss_sum = kl_sum = entropy_sum = clipped = entries = 0.0
        kept = 0
        for rows in rollouts:
            completions = [r.token_ids for r in rows]
            with torch.no_grad(), teacher.network() as network:
                t_logits, _ = completion_logits(network, [r.record.teacher.ids for r in rows], completions, pad_id, placement)
            s_logits, mask = completion_logits(model, [r.record.student.ids for r in rows], completions, pad_id, placement)
            vocab = min(s_logits.shape[-1], t_logits.shape[-1])  # a padded embedding may add unused ids
            parts = micro_loss(s_logits[..., :vocab], t_logits[..., :vocab], right_aligned(completions, placement.device),
                               mask, ts.loss, denominator)
            parts.loss.backward()
            loss_sum += float(parts.loss.detach())
            kl_sum += parts.kl_sum
            entropy_sum += parts.entropy_sum
            clipped += parts.clipped
            entries += parts.clip_entries
            kept += parts.tokens
        last_loss = loss_sum
        if not math.isfinite(last_loss):
            raise FloatingPointError(f"loss is {last_loss} at step {step + 1}; try a lower lr")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        step += 1
        teacher.after_step(step)

        seconds = time.perf_counter() - started
        elapsed += seconds
        flat = [r for rows in rollouts for r in rows]
        metrics = {
            "step": step,
            "loss": last_loss,
            "kl": kl_sum / max(kept, 1),
            "clip_fraction": (clipped / entries) if entries else None,
            "entropy": entropy_sum / max(kept, 1),
            "completion_length": sum(len(r.token_ids) for r in flat) / len(flat),
            "truncation_rate": sum(r.finish_reason == "length" for r in flat) / len(flat),
            "lr": lr,
            "grad_norm": grad_norm,
            "on_policy": on_policy,
            "seconds": seconds,
            "rollout_seconds": rollout_seconds,
            "tokens": sum(len(r.token_ids) for r in flat),
        }
        _append_jsonl(metrics_file, metrics)
        events.emit("progress", total_steps=total_steps, **metrics)
        if ts.record_every and (step == 1 or step % ts.record_every == 0 or step == total_steps):
            first = flat[0]
            _append_jsonl(boundaries_file, {
                "step": step,
                "record_line": first.record.line,
                "on_policy": on_policy,
                "student": _boundary(tokenizer, first.record.student, first.token_ids),
                "teacher": _boundary(tokenizer, first.record.teacher, first.token_ids),
            })
        if ts.checkpoint_every and step % ts.checkpoint_every == 0 and step < total_steps:
            state = {"step": step, "seconds": elapsed, "loss": last_loss, "fingerprint": fingerprint,
                     "data_position": data_position(step, len(records), ts.batch_size, ts.grad_accum)}
            path = save_checkpoint(ckpt_root, step, model, optimizer, scheduler, state, extra_tensors=teacher.state())
            events.emit("checkpoint", step=step, path=str(path))

    save_final(model, tokenizer, out, lora=ts.lora is not None)
    summary: dict[str, Any] = {
        "final_dir": str(final_dir.resolve()),
        "steps": total_steps,
        "final_loss": last_loss,
        "seconds": round(elapsed, 3),
        "parameters": total_params - (trainable if ts.lora is not None else 0),
        "trainable_parameters": trainable,
        "mean_kl_first": _mean_kl(metrics_file, first=True),
        "mean_kl_last": _mean_kl(metrics_file, first=False),
    }
    if ts.lora is not None:
        summary["adapter_dir"] = str(adapter_dir.resolve())
    write_json_atomic(done_file, {"summary": summary, "fingerprint": fingerprint})
    return summary


def _length_mask(rows: Sequence[Rollout]) -> torch.Tensor:
    """The right-aligned completion mask of `completion_logits`, on the CPU, from lengths alone."""
    longest = max(len(r.token_ids) for r in rows)
    mask = torch.zeros((len(rows), longest), dtype=torch.bool)
    for i, r in enumerate(rows):
        mask[i, longest - len(r.token_ids):] = True
    return mask


def _off_policy(
    batch: Sequence[Record],
    tokenizer: PreTrainedTokenizerBase,
    teacher: Teacher,
    params: SamplingParams,
    eos_ids: Sequence[int],
) -> list[Rollout]:
    """An off-policy step's sequences: the records' own completions (ending with EOS) where all have one,
    otherwise samples from the teacher on its own prompt (GKD's sequence-level KD)."""
    if all(r.completion is not None for r in batch):
        end = [eos_ids[0]] if eos_ids else []
        return [
            Rollout(r, encode_continuation(tokenizer, r.completion or "") + end, "eos")
            for r in batch
            for _ in range(params.n)
        ]
    with torch.no_grad(), teacher.network() as network:
        return sample_rollouts(network, tokenizer, [r.teacher.ids for r in batch], batch, params)
