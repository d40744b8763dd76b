"""The `train` job: supervised fine-tuning (full or LoRA) and training from scratch, with exact resume.

Design, in short:
- The data order is a pure function of (seed, step): epoch e visits the examples in a permutation drawn from
  a generator seeded with (seed, e), cut into optimizer steps of batch_size * grad_accum examples (the last
  step of an epoch may be smaller; no example is skipped). A resumed run therefore needs only the step.
- The loss of an optimizer step is the mean cross-entropy over all label tokens of that step, across its
  micro-batches: each micro-batch backpropagates (sum of its token losses) / (label tokens in the step), so
  grad_accum changes memory use, not the result.
- Learning rate: linear warmup, then cosine decay towards min_lr (see `lr_factor`).
- AdamW with weight decay on matrices only; biases and norm weights (1-D parameters) are not decayed.
- Checkpoints hold the trainable weights (the adapter only for LoRA), optimizer, scheduler, RNG states, step
  and data position. They are written into a temp folder and renamed into place, so a crash never leaves a
  half checkpoint under a final name; on start the newest one is loaded. On CPU the resumed run is
  bit-identical to an uninterrupted one.
- `final/` (Hugging Face layout, LoRA merged) and `adapter/` (LoRA runs) are also renamed into place;
  `done.json` is written last and marks the run finished: re-running returns its summary without training.
- `run` emits progress, log and checkpoint events; `jobs.run_job` emits `start`, and `done` with the summary
  that `run` returns (its `error` event on failure).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .data import IGNORE_INDEX, LossOn, TokenizedExample, collate, load_examples, tokenize_examples
from .events import EventLog
from .generate import accepts_logits_to_keep
from .models import (
    Placement,
    build_char_tokenizer,
    build_piece_tokenizer,
    build_model_from_config,
    check_model_dir,
    choose_placement,
    count_parameters,
    load_model,
    load_tokenizer,
    save_model,
)

# ----------------------------------------------------------------------------------------------------------
# The job spec

DEFAULTS: dict[str, Any] = {
    "type": "train",
    "model": None,
    "init": None,
    "loss_on": "completion",
    "chat_template": False,
    "max_seq_len": 512,
    "lora": None,
    # Keep the token embeddings at their initial values. For from-scratch models whose corpus uses many
    # interchangeable tokens (identifiers, names): trained embeddings of such tokens converge to one direction,
    # after which the model cannot tell them apart and so cannot copy one from its context.
    "freeze_embeddings": False,
    "lr": 5e-4,
    "min_lr": 0.0,
    "warmup_steps": 0,
    "max_steps": None,
    "epochs": None,
    "batch_size": 16,
    "grad_accum": 1,
    "max_grad_norm": 1.0,
    "weight_decay": 0.0,
    "betas": [0.9, 0.999],
    "seed": 0,
    "checkpoint_every": 50,
    "device": None,
    "dtype": None,
}
REQUIRED = ("output_dir", "data")
LORA_DEFAULTS: dict[str, Any] = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}
# Keys that may change between a run and its resume without changing what is computed (up to device numerics).
RESUMABLE_CHANGES = frozenset({"output_dir", "device", "dtype", "checkpoint_every"})


@dataclass(frozen=True)
class LoraSpec:
    r: int
    alpha: float
    dropout: float
    target_modules: list[str] | str


@dataclass(frozen=True)
class TrainSpec:
    output_dir: Path
    data: Path
    model: Path | None
    init: dict[str, Any] | None
    loss_on: LossOn
    chat_template: bool
    max_seq_len: int
    lora: LoraSpec | None
    freeze_embeddings: bool
    lr: float
    min_lr: float
    warmup_steps: int
    max_steps: int | None
    epochs: int | None
    batch_size: int
    grad_accum: int
    max_grad_norm: float | None
    weight_decay: float
    betas: tuple[float, float]
    seed: int
    checkpoint_every: int | None
    device: str | None
    dtype: str | None


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def check_int(v: Any, name: str, minimum: int, where: str = "train spec") -> int:
    if not is_int(v) or v < minimum:
        raise ValueError(f"{where}: {name} must be an integer >= {minimum}, got {v!r}")
    return v


def check_float(v: Any, name: str, minimum: float, strictly: bool = False, where: str = "train spec") -> float:
    if not is_number(v) or v < minimum or (strictly and v == minimum):
        raise ValueError(f"{where}: {name} must be a number {'>' if strictly else '>='} {minimum:g}, got {v!r}")
    return float(v)


def validate_lora(lora: Any, where: str = "train spec") -> LoraSpec | None:
    if lora is None:
        return None
    if not isinstance(lora, dict):
        raise ValueError(f"{where}: lora must be an object or null, got {lora!r}")
    unknown = sorted(set(lora) - set(LORA_DEFAULTS))
    if unknown:
        raise ValueError(f"{where}: unknown lora keys {unknown}; known: {sorted(LORA_DEFAULTS)}")
    merged = {**LORA_DEFAULTS, **lora}
    r, alpha, dropout, targets = merged["r"], merged["alpha"], merged["dropout"], merged["target_modules"]
    if not is_number(dropout) or not 0 <= dropout < 1:
        raise ValueError(f"{where}: lora.dropout must be in [0, 1), got {dropout!r}")
    valid_list = isinstance(targets, list) and targets and all(isinstance(t, str) and t for t in targets)
    if targets != "all-linear" and not valid_list:
        raise ValueError(f"{where}: lora.target_modules must be a non-empty list of names or 'all-linear', got {targets!r}")
    return LoraSpec(
        check_int(r, "lora.r", 1, where), check_float(alpha, "lora.alpha", 0.0, strictly=True, where=where), float(dropout), targets
    )


def _validate_init(init: Any) -> dict[str, Any]:
    if not isinstance(init, dict):
        raise ValueError(f"train spec: init must be an object, got {init!r}")
    unknown = sorted(set(init) - {"config", "tokenizer"})
    if unknown:
        raise ValueError(f"train spec: unknown init keys {unknown}; known: ['config', 'tokenizer']")
    if not isinstance(init.get("config"), dict):
        raise ValueError("train spec: init.config must be an object of model config fields")
    tok = init.get("tokenizer")
    kinds = {"char": {"kind", "alphabet"}, "pieces": {"kind", "pieces", "pattern"}}
    if not isinstance(tok, dict) or tok.get("kind") not in kinds:
        raise ValueError('train spec: init.tokenizer must be {"kind": "char", "alphabet": "..."} or '
                         '{"kind": "pieces", "pieces": [...], "pattern": "REGEX"}')
    unknown = sorted(set(tok) - kinds[tok["kind"]])
    if unknown:
        raise ValueError(f"train spec: unknown init.tokenizer keys {unknown}")
    if tok["kind"] == "char":
        if not isinstance(tok.get("alphabet"), str) or not tok["alphabet"]:
            raise ValueError("train spec: init.tokenizer.alphabet must be a non-empty string")
    else:
        pieces = tok.get("pieces")
        if not isinstance(pieces, list) or not pieces or not all(isinstance(p, str) and p for p in pieces):
            raise ValueError("train spec: init.tokenizer.pieces must be a non-empty list of non-empty strings")
        if not isinstance(tok.get("pattern"), str) or not tok["pattern"]:
            raise ValueError("train spec: init.tokenizer.pattern must be a non-empty regular expression")
    return init


def spec_with_defaults(
    spec: Any, defaults: dict[str, Any], required: tuple[str, ...], job_type: str, where: str
) -> tuple[dict[str, Any], Path]:
    """The checks every training job spec starts with: an object of known keys with the required ones present,
    of the right type, whose data file exists. Returns the spec with defaults filled in, and the data path."""
    if not isinstance(spec, dict):
        raise ValueError(f"{where} must be an object, got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(defaults) - set(required))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}")
    missing = [k for k in required if spec.get(k) in (None, "")]
    if missing:
        raise ValueError(f"{where}: missing required keys {missing}")
    s = {**defaults, **spec}
    if s["type"] != job_type:
        raise ValueError(f"{where}: type must be {job_type!r}, got {s['type']!r}")
    data = Path(s["data"])
    if not data.is_file():
        raise FileNotFoundError(f"{where}: data file not found: {data}")
    return s, data


def validate_spec(spec: dict[str, Any]) -> TrainSpec:
    """Check a train job spec and fill in defaults. Raises ValueError / FileNotFoundError with a clear message."""
    s, data = spec_with_defaults(spec, DEFAULTS, REQUIRED, "train", "train spec")
    if (s["model"] is None) == (s["init"] is None):
        raise ValueError("train spec: give exactly one of 'model' (a model folder) and 'init' (config + tokenizer)")
    model = check_model_dir(s["model"]) if s["model"] is not None else None
    init = _validate_init(s["init"]) if s["init"] is not None else None

    if s["loss_on"] not in ("completion", "all"):
        raise ValueError(f"train spec: loss_on must be 'completion' or 'all', got {s['loss_on']!r}")
    if not isinstance(s["freeze_embeddings"], bool):
        raise ValueError(f"train spec: freeze_embeddings must be true or false, got {s['freeze_embeddings']!r}")
    if not isinstance(s["chat_template"], bool):
        raise ValueError(f"train spec: chat_template must be true or false, got {s['chat_template']!r}")

    max_steps = None if s["max_steps"] is None else check_int(s["max_steps"], "max_steps", 1)
    epochs = None if s["epochs"] is None else check_int(s["epochs"], "epochs", 1)
    if (max_steps is None) == (epochs is None):
        raise ValueError("train spec: give exactly one of 'max_steps' and 'epochs'")
    lr = check_float(s["lr"], "lr", 0.0, strictly=True)
    min_lr = check_float(s["min_lr"], "min_lr", 0.0)
    if min_lr > lr:
        raise ValueError(f"train spec: min_lr ({min_lr}) must not exceed lr ({lr})")
    betas = s["betas"]
    if not (isinstance(betas, (list, tuple)) and len(betas) == 2 and all(is_number(b) and 0 <= b < 1 for b in betas)):
        raise ValueError(f"train spec: betas must be two numbers in [0, 1), got {betas!r}")
    for key in ("device", "dtype"):
        if s[key] is not None and not isinstance(s[key], str):
            raise ValueError(f"train spec: {key} must be a string or null, got {s[key]!r}")

    return TrainSpec(
        output_dir=Path(s["output_dir"]),
        data=data,
        model=model,
        init=init,
        loss_on=s["loss_on"],
        chat_template=s["chat_template"],
        max_seq_len=check_int(s["max_seq_len"], "max_seq_len", 2),
        lora=validate_lora(s["lora"]),
        freeze_embeddings=s["freeze_embeddings"],
        lr=lr,
        min_lr=min_lr,
        warmup_steps=check_int(s["warmup_steps"], "warmup_steps", 0),
        max_steps=max_steps,
        epochs=epochs,
        batch_size=check_int(s["batch_size"], "batch_size", 1),
        grad_accum=check_int(s["grad_accum"], "grad_accum", 1),
        max_grad_norm=None if s["max_grad_norm"] is None else check_float(s["max_grad_norm"], "max_grad_norm", 0.0, strictly=True),
        weight_decay=check_float(s["weight_decay"], "weight_decay", 0.0),
        betas=(float(betas[0]), float(betas[1])),
        seed=check_int(s["seed"], "seed", 0),
        checkpoint_every=None if s["checkpoint_every"] is None else check_int(s["checkpoint_every"], "checkpoint_every", 1),
        device=s["device"],
        dtype=s["dtype"],
    )


# ----------------------------------------------------------------------------------------------------------
# Schedule and data order (pure functions of the step, which is what makes resume exact)


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_ratio: float, schedule: str = "cosine") -> float:
    """Multiplier of the peak lr for the update at 0-based `step`.

    Warmup: (step + 1) / warmup_steps, so no update is wasted at lr 0 and the last warmup step reaches the
    peak. Then cosine (or linear) decay from the peak (at step == warmup_steps) towards min_ratio, reached one
    step past the end.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if schedule == "linear":
        return min_ratio + (1.0 - min_ratio) * (1.0 - progress)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def steps_per_epoch(n_examples: int, batch_size: int, grad_accum: int) -> int:
    return math.ceil(n_examples / (batch_size * grad_accum))


def epoch_permutation(n_examples: int, seed: int, epoch: int) -> np.ndarray:
    # A generator of its own (not the global RNG), seeded by (seed, epoch): the order never depends on history.
    return np.random.default_rng([seed, epoch]).permutation(n_examples)


def step_microbatches(step: int, n_examples: int, batch_size: int, grad_accum: int, seed: int) -> list[list[int]]:
    """Example indices of each micro-batch of the optimizer step at 0-based `step`."""
    per_step = batch_size * grad_accum
    epoch, index = divmod(step, steps_per_epoch(n_examples, batch_size, grad_accum))
    chunk = epoch_permutation(n_examples, seed, epoch)[index * per_step : (index + 1) * per_step].tolist()
    return [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]


def data_position(step: int, n_examples: int, batch_size: int, grad_accum: int) -> dict[str, int]:
    """Where the data stream stands after `step` completed optimizer steps."""
    epoch, index = divmod(step, steps_per_epoch(n_examples, batch_size, grad_accum))
    return {"epoch": epoch, "example_in_epoch": min(n_examples, index * batch_size * grad_accum)}


# ----------------------------------------------------------------------------------------------------------
# Model, optimizer, loss


def config_for_tokenizer(config: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """An `init` config completed from its tokenizer: vocab_size (if absent) and the special token ids."""
    config = dict(config)
    vocab = len(tokenizer)
    if config.setdefault("vocab_size", vocab) < vocab:
        raise ValueError(f"train spec: init.config.vocab_size {config['vocab_size']} < tokenizer size {vocab}")
    # The generation config inherits these, so sampling stops at the tokenizer's EOS.
    config.setdefault("bos_token_id", tokenizer.bos_token_id)
    config.setdefault("eos_token_id", tokenizer.eos_token_id)
    config.setdefault("pad_token_id", tokenizer.pad_token_id)
    return config


def _build_model(
    spec: TrainSpec, placement: Placement, tmp_dir: Path
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    if spec.model is not None:
        return load_model(spec.model, placement=placement, for_training=True)
    assert spec.init is not None
    tok = spec.init["tokenizer"]
    if tok["kind"] == "char":
        build_char_tokenizer(tok["alphabet"], tmp_dir)
    else:
        build_piece_tokenizer(tok["pieces"], tok["pattern"], tmp_dir)
    tokenizer = load_tokenizer(tmp_dir)
    config = config_for_tokenizer(spec.init["config"], tokenizer)
    model = build_model_from_config(config, seed=spec.seed).to(placement.device)
    model.train()
    return model, tokenizer


def apply_lora(model: PreTrainedModel, lora: LoraSpec, seed: int) -> PreTrainedModel:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(seed)  # LoRA A matrices are initialised randomly
    return get_peft_model(model, config)  # type: ignore[return-value]


def trainable_named_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    # named_parameters() yields a tied tensor once, so tied embeddings are stored and optimised once.
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def make_optimizer(
    model: torch.nn.Module, lr: float, betas: tuple[float, float], weight_decay: float
) -> torch.optim.AdamW:
    params = trainable_named_parameters(model)
    # Decay matrices only: decaying norm gains and biases towards 0 only hurts.
    decay = [p for _, p in params if p.ndim >= 2]
    no_decay = [p for _, p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=betas)


def autocast_context(placement: Placement) -> contextlib.AbstractContextManager[Any]:
    if placement.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=placement.device.type, dtype=placement.autocast_dtype)


def token_loss_sum(model: torch.nn.Module, batch: dict[str, torch.Tensor], placement: Placement) -> torch.Tensor:
    """Sum of next-token cross-entropies over the label tokens of a batch (labels are aligned with inputs)."""
    # Logits at position t predict token t + 1. Only positions where some row has a label need the output
    # layer; with completion-only loss that skips the prompts (for large vocabularies the output layer is most
    # of the compute). The model's own head computes them, so any logit scaling it applies is kept.
    labels = batch["labels"][:, 1:]
    positions = (labels != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)
    extra: dict[str, Any] = {}
    if len(positions) < labels.shape[1] and _accepts_logits_to_keep(model):
        extra["logits_to_keep"] = positions
        labels = labels[:, positions]
    with autocast_context(placement):
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False, **extra).logits
    if not extra:
        logits = logits[:, :-1]
    keep = labels != IGNORE_INDEX
    # Select the positions that carry a loss before upcasting: full-vocabulary fp32 logits are the big tensor.
    picked = logits[keep].float()
    return F.cross_entropy(picked, labels[keep], reduction="sum")


def _accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    # A PEFT wrapper forwards extra keyword arguments to the model it wraps; ask that model.
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return accepts_logits_to_keep(inner)


# ----------------------------------------------------------------------------------------------------------
# Checkpoints

CHECKPOINT_MARKER = "complete"


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        # Plain lists, so the file loads with torch.load(weights_only=True).
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    name, key, *rest = state["numpy"]
    np.random.set_state((name, np.array(key, dtype=np.uint32), *rest))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds CUDA too


def _step_of(path: Path) -> int:
    return int(path.name.split("-", 1)[1])


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not root.is_dir():
        return []
    found = [
        p for p in root.iterdir()
        if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit() and (p / CHECKPOINT_MARKER).is_file()
    ]
    return sorted(found, key=_step_of)


def save_checkpoint(
    root: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    state: dict[str, Any],
    keep: int = 2,
    extra_tensors: dict[str, dict[str, torch.Tensor]] | None = None,
) -> Path:
    """Write checkpoints/step-N atomically and keep the newest `keep`.

    `extra_tensors` maps a name to more tensors to keep (e.g. an EMA teacher), each in `<name>.safetensors`."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step-{step}-", dir=root))
    weights = {n: p.detach().to("cpu").contiguous() for n, p in trainable_named_parameters(model)}
    save_file(weights, str(tmp / "trainable.safetensors"))
    for name, tensors in (extra_tensors or {}).items():
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp / f"{name}.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save({"scheduler": scheduler.state_dict(), "rng": _rng_state(), **state}, tmp / "state.pt")
    (tmp / "meta.json").write_text(json.dumps(state, indent=2) + "\n")  # the same, readable by people and tools
    for f in tmp.iterdir():
        _fsync(f)
    (tmp / CHECKPOINT_MARKER).write_text("")  # last: its presence means every other file is whole
    if final.exists():  # a stale copy of this step from an earlier attempt
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync(root)
    for old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG states; return the saved state (step, data position...)."""
    weights = load_file(str(path / "trainable.safetensors"))
    params = dict(trainable_named_parameters(model))
    if set(weights) != set(params):
        raise ValueError(f"checkpoint {path} does not match the model's trainable parameters")
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    # Onto the CPU first: load_state_dict moves optimizer state to each parameter's device.
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    scheduler.load_state_dict(state.pop("scheduler"))
    _set_rng_state(state.pop("rng"))
    return state


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------------------
# The job


def fingerprint_of(
    spec: dict[str, Any], data: Path, defaults: dict[str, Any], resumable: frozenset[str] = RESUMABLE_CHANGES
) -> dict[str, Any]:
    """What defines the computation: the spec (defaults filled) minus keys that may change on resume,
    with model folders made absolute and the data file identified by content."""
    s = {k: v for k, v in {**defaults, **spec}.items() if k not in resumable}
    for key in ("model", "teacher_model"):
        if s.get(key) is not None:
            s[key] = os.path.abspath(s[key])
    s["data"] = hashlib.sha256(data.read_bytes()).hexdigest()
    return json.loads(json.dumps(s))


def check_same_run(saved: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    if saved != current:
        keys = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
        raise ValueError(
            f"{where} belongs to a different training run (differs in: {', '.join(keys)}); "
            "use a new output_dir, or delete it to start over"
        )


def write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    _fsync(tmp)
    os.replace(tmp, path)


def _batches(
    data: list[TokenizedExample], step: int, spec: TrainSpec, pad_id: int, device: torch.device
) -> Iterator[dict[str, torch.Tensor]]:
    for indices in step_microbatches(step, len(data), spec.batch_size, spec.grad_accum, spec.seed):
        batch = collate([data[i] for i in indices], pad_id)
        yield {k: v.to(device) for k, v in batch.items()}


def _load_data(ts: TrainSpec, tokenizer: PreTrainedTokenizerBase, events: EventLog) -> list[TokenizedExample]:
    dataset = tokenize_examples(tokenizer, load_examples(ts.data), ts.loss_on, ts.chat_template, ts.max_seq_len)
    if dataset.dropped:
        events.emit("log", level="warning", dropped=dataset.dropped,
                    message=f"dropped {dataset.dropped} of {dataset.total} examples: no completion token left "
                            f"within max_seq_len {ts.max_seq_len}")
    if not dataset.examples:
        raise ValueError(f"no training examples left in {ts.data} after truncation to max_seq_len {ts.max_seq_len}")
    return dataset.examples


def save_final(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out: Path, lora: bool) -> None:
    """adapter/ (LoRA runs, saved before merging) and final/ (merged), each renamed into place when whole."""
    model.eval()
    if lora:
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-adapter-", dir=out))
        model.save_pretrained(str(tmp))
        os.replace(tmp, out / "adapter")
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-final-", dir=out))
    save_model(model, tokenizer, tmp)  # merges LoRA into the base weights
    os.replace(tmp, out / "final")


def training_placement(device: str | None, dtype: str | None, where: str) -> Placement:
    placement = choose_placement(device, dtype)
    if placement.autocast_dtype == torch.float16:
        raise ValueError(f"{where}: float16 training needs loss scaling, which is not supported; use bfloat16 or float32")
    return placement


def finished_or_cleaned(out: Path, fingerprint: dict[str, Any], events: EventLog) -> dict[str, Any] | None:
    """A training job's start in `out`: the summary of a finished run of the same spec (done.json with final/),
    or None after removing what an interrupted attempt left (temp folders, a final/ or adapter/ not yet
    confirmed by done.json). Checkpoints stay, to resume from."""
    out.mkdir(parents=True, exist_ok=True)
    final_dir, done_file = out / "final", out / "done.json"
    if done_file.is_file() and (final_dir / "config.json").is_file():
        done = json.loads(done_file.read_text())
        check_same_run(done["fingerprint"], fingerprint, out)
        events.emit("log", message=f"already trained: {final_dir}")
        summary: dict[str, Any] = done["summary"]
        return summary
    for stale in [*out.glob(".tmp-*"), *(out / "checkpoints").glob(".tmp-*"), final_dir, out / "adapter"]:
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()
    return None


def run(spec: dict[str, Any], events: EventLog) -> dict[str, Any]:
    """Run (or resume, or recognise as finished) a train job; emit progress, log and checkpoint events.

    Returns the fields of the `done` event: {final_dir, steps, final_loss, seconds, parameters,
    trainable_parameters} (+ adapter_dir for LoRA). `seconds` is training time summed over resumed attempts."""
    ts = validate_spec(spec)
    placement = training_placement(ts.device, ts.dtype, "train spec")
    out = ts.output_dir
    fingerprint = fingerprint_of(spec, ts.data, DEFAULTS)
    final_dir, adapter_dir, done_file, ckpt_root = out / "final", out / "adapter", out / "done.json", out / "checkpoints"
    finished = finished_or_cleaned(out, fingerprint, events)
    if finished is not None:
        return finished

    with tempfile.TemporaryDirectory(prefix="distillery-tok-") as tok_dir:
        model, tokenizer = _build_model(ts, placement, Path(tok_dir))
    data = _load_data(ts, tokenizer, events)
    max_pos = getattr(model.config, "max_position_embeddings", None)
    if max_pos is not None and ts.max_seq_len > max_pos:
        events.emit("log", level="warning",
                    message=f"max_seq_len {ts.max_seq_len} exceeds the model's max_position_embeddings {max_pos}")
    pad_id = tokenizer.pad_token_id
    assert pad_id is not None  # load_tokenizer guarantees one

    if ts.lora is not None:
        model = apply_lora(model, ts.lora, ts.seed)
    if ts.freeze_embeddings:
        for layer in (model.get_input_embeddings(), model.get_output_embeddings()):
            if layer is not None:
                layer.weight.requires_grad_(False)
    total_params = count_parameters(model)
    trainable = sum(p.numel() for _, p in trainable_named_parameters(model))
    per_epoch = steps_per_epoch(len(data), ts.batch_size, ts.grad_accum)
    if ts.max_steps is not None:
        total_steps = ts.max_steps
    else:
        assert ts.epochs is not None  # validate_spec lets exactly one of them through
        total_steps = ts.epochs * per_epoch
    optimizer = make_optimizer(model, ts.lr, ts.betas, ts.weight_decay)
    min_ratio = ts.min_lr / ts.lr
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, ts.warmup_steps, total_steps, min_ratio)
    )

    seed_everything(ts.seed)
    step, elapsed, last_loss = 0, 0.0, float("nan")
    checkpoints = list_checkpoints(ckpt_root)
    if checkpoints:
        saved = json.loads((checkpoints[-1] / "meta.json").read_text())
        check_same_run(saved["fingerprint"], fingerprint, checkpoints[-1])
        state = load_checkpoint(checkpoints[-1], model, optimizer, scheduler)
        step, elapsed, last_loss = state["step"], state["seconds"], state["loss"]
        # The order is a function of the step; a different position means the data set itself changed size.
        if state["data_position"] != data_position(step, len(data), ts.batch_size, ts.grad_accum):
            raise ValueError(f"{checkpoints[-1]} was taken at another data position; the tokenized data changed")
        events.emit("log", message=f"resumed from {checkpoints[-1]}", step=step)
    events.emit(
        "log",
        message="training",
        examples=len(data),
        total_steps=total_steps,
        steps_per_epoch=per_epoch,
        parameters=total_params,
        trainable_parameters=trainable,
        device=str(placement.device),
        autocast=str(placement.autocast_dtype).removeprefix("torch.") if placement.autocast_dtype else None,
    )

    model.train()
    params = [p for _, p in trainable_named_parameters(model)]
    clip = ts.max_grad_norm if ts.max_grad_norm is not None else math.inf
    while step < total_steps:
        started = time.perf_counter()
        batches = list(_batches(data, step, ts, pad_id, placement.device))
        label_tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
        optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        for batch in batches:
            loss = token_loss_sum(model, batch, placement)
            (loss / label_tokens).backward()
            loss_sum += loss.item()
        last_loss = loss_sum / label_tokens
        if not math.isfinite(last_loss):
            raise FloatingPointError(f"loss is {last_loss} at step {step + 1}; try a lower lr")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        step += 1
        seconds = time.perf_counter() - started
        elapsed += seconds
        tokens = sum(int(b["attention_mask"].sum()) for b in batches)
        events.emit("progress", step=step, total_steps=total_steps, loss=last_loss, lr=lr, grad_norm=grad_norm,
                    tokens_per_s=tokens / seconds)
        if ts.checkpoint_every and step % ts.checkpoint_every == 0 and step < total_steps:
            state = {"step": step, "seconds": elapsed, "loss": last_loss, "fingerprint": fingerprint,
                     "data_position": data_position(step, len(data), ts.batch_size, ts.grad_accum)}
            path = save_checkpoint(ckpt_root, step, model, optimizer, scheduler, state)
            events.emit("checkpoint", step=step, path=str(path))

    save_final(model, tokenizer, out, lora=ts.lora is not None)
    summary = {
        "final_dir": str(final_dir.resolve()),
        "steps": total_steps,
        "final_loss": last_loss,
        "seconds": round(elapsed, 3),
        "parameters": total_params - (trainable if ts.lora is not None else 0),
        "trainable_parameters": trainable,
    }
    if ts.lora is not None:
        summary["adapter_dir"] = str(adapter_dir.resolve())
    write_json_atomic(done_file, {"summary": summary, "fingerprint": fingerprint})
    return summary
