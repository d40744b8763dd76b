"""Per-token divergences for on-policy (self-)distillation: SDFT, OPSD, GKD.

Everything here is plain PyTorch and works on logits shaped ``[..., T, V]`` (any
leading batch dims, ``T`` completion positions, ``V`` vocabulary entries) and
returns per-token values shaped ``[..., T]``. Reduce them with :func:`reduce_loss`.

Conventions (read this before changing anything; the direction of KL has been
silently inverted in several public codebases)
--------------------------------------------------------------------------------
Let ``p_S`` be the student distribution and ``p_T`` the teacher distribution at
one position, both computed as ``softmax(logits / temperature)`` in float32.

* ``forward_kl``  = KL(p_T ‖ p_S) = Σ_v p_T(v) · (log p_T(v) − log p_S(v))
  ("mode covering"; GKD/TRL β=0, SDFT α=0, OPSD beta=0 — the setting the SDFT
  and OPSD-v3 results actually used). Equal to
  ``F.kl_div(input=log p_S, target=log p_T, log_target=True).sum(-1)``:
  PyTorch's ``kl_div(input, target)`` computes KL(target ‖ input).
* ``reverse_kl``  = KL(p_S ‖ p_T) = Σ_v p_S(v) · (log p_S(v) − log p_T(v))
  ("mode seeking"; GKD/TRL β=1, SDFT α=1).
* ``jsd`` (generalized Jensen–Shannon, GKD Eq. 1, identical to TRL's
  ``generalized_jsd_loss`` for 0 < β < 1)::

      M      = (1 − β) · p_S + β · p_T
      JSD(β) = β · KL(p_T ‖ M) + (1 − β) · KL(p_S ‖ M)

  β = 0.5 is the ordinary (symmetric) JSD, bounded by ln 2. The formula itself
  tends to 0 at both ends (M collapses onto the distribution it is compared
  with), but to first order ``JSD(β) ≈ β · KL(p_T ‖ p_S)`` as β → 0 and
  ``JSD(β) ≈ (1 − β) · KL(p_S ‖ p_T)`` as β → 1. That is why GKD/TRL (and the
  SDFT/OPSD trainers copied from it) *special-case* β == 0 as forward KL and
  β == 1 as reverse KL. Here ``kind="jsd"`` requires 0 < β < 1 and raises
  otherwise; use :func:`kind_from_beta` to translate a GKD/TRL/OPSD ``beta``
  (or SDFT ``alpha``) into ``(kind, beta)`` with exactly the TRL semantics.

Stop-gradient: every function detaches the teacher; gradients reach only the
student logits. ``-inf`` logits (masked vocabulary entries) are handled: a
zero-probability entry contributes exactly 0 (0 · log 0 := 0). An entry with
p_T > 0 but p_S = 0 correctly gives KL(p_T ‖ p_S) = +inf.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

DivergenceKind = Literal["forward_kl", "reverse_kl", "jsd"]
TopKSupport = Literal["teacher", "student"]
ReductionMode = Literal["token_mean", "sequence_mean"]

__all__ = [
    "ClippedDivergence",
    "DivergenceKind",
    "ReductionMode",
    "SampledTokenReverseKL",
    "TopKSupport",
    "clip_pointwise",
    "clipped_divergence",
    "divergence",
    "divergence_terms",
    "kind_from_beta",
    "log_probs",
    "loss_keep_mask",
    "reduce_loss",
    "sampled_token_reverse_kl",
    "topk_divergence",
    "topk_log_probs",
]


# --------------------------------------------------------------------------- helpers


def log_probs(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """float32 ``log_softmax(logits / temperature)`` over the last dim.

    The loss temperature divides the logits before the softmax; it is unrelated
    to (and must be configured separately from) the sampling temperature.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return F.log_softmax(logits.float() / temperature, dim=-1)


def _plogp_ratio(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Element-wise ``p · (log p − log q)`` with the convention ``0 · log(0/q) = 0``.

    Masked with ``torch.where`` on *sanitized* inputs so that ``-inf`` entries give
    neither NaN values nor NaN gradients.
    """
    support = log_p > float("-inf")
    if bool(support.all()):  # the usual case (softmax of finite logits): no masking passes needed
        return log_p.exp() * (log_p - log_q)
    safe_log_p = torch.where(support, log_p, torch.zeros_like(log_p))
    safe_log_q = torch.where(support, log_q, torch.zeros_like(log_q))
    terms = safe_log_p.exp() * (safe_log_p - safe_log_q)
    return torch.where(support, terms, torch.zeros_like(terms))


def _check_kind(kind: str, beta: float) -> None:
    if kind == "jsd":
        if not 0.0 < beta < 1.0:
            raise ValueError(
                f"kind='jsd' needs 0 < beta < 1 (got {beta}); the GKD/TRL endpoints are "
                "special cases: use kind_from_beta(beta) (beta=0 -> forward_kl, beta=1 -> reverse_kl)"
            )
    elif kind not in ("forward_kl", "reverse_kl"):
        raise ValueError(f"unknown divergence kind {kind!r}")


def kind_from_beta(beta: float) -> tuple[DivergenceKind, float]:
    """Map a GKD/TRL ``beta`` (OPSD ``beta``, SDFT ``alpha``) to ``(kind, beta)``.

    Exactly TRL's ``generalized_jsd_loss`` semantics: 0 → forward KL(T‖S),
    1 → reverse KL(S‖T), otherwise generalized JSD with mixture
    ``(1 − β)·p_S + β·p_T``.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if beta == 0.0:
        return "forward_kl", beta
    if beta == 1.0:
        return "reverse_kl", beta
    return "jsd", beta


# --------------------------------------------------------------------------- full vocabulary


def divergence_terms(
    student_log_probs: Tensor,
    teacher_log_probs: Tensor,
    kind: DivergenceKind,
    beta: float = 0.5,
) -> Tensor:
    """Per-vocabulary-entry summands ``ℓ[..., v]`` of the divergence; ``ℓ.sum(-1)`` is the divergence.

    Inputs are normalized log-probabilities over the same support (last dim).
    Individual summands may be negative; only their sum is ≥ 0.
    """
    _check_kind(kind, beta)
    log_s = student_log_probs
    log_t = teacher_log_probs.detach()
    if kind == "forward_kl":  # KL(T ‖ S)
        return _plogp_ratio(log_t, log_s)
    if kind == "reverse_kl":  # KL(S ‖ T)
        return _plogp_ratio(log_s, log_t)
    # generalized JSD: log M = logsumexp(log(1-β) + log p_S, log β + log p_T)
    # (sanitized where both are -inf: logaddexp(-inf, -inf) has a NaN gradient)
    either = (log_s > float("-inf")) | (log_t > float("-inf"))
    zeros = torch.zeros_like(log_s)
    log_m = torch.logaddexp(
        torch.where(either, log_s, zeros) + math.log1p(-beta),
        torch.where(either, log_t, zeros) + math.log(beta),
    )
    log_m = torch.where(either, log_m, torch.full_like(log_m, float("-inf")))
    return beta * _plogp_ratio(log_t, log_m) + (1.0 - beta) * _plogp_ratio(log_s, log_m)


def divergence(
    student_logits: Tensor,
    teacher_logits: Tensor,
    kind: DivergenceKind,
    beta: float = 0.5,
    temperature: float = 1.0,
) -> Tensor:
    """Per-token divergence over the FULL vocabulary: ``[..., T, V] → [..., T]`` (float32).

    ``kind``: ``"forward_kl"`` = KL(teacher ‖ student), ``"reverse_kl"`` =
    KL(student ‖ teacher), ``"jsd"`` = β·KL(p_T‖M) + (1−β)·KL(p_S‖M) with
    M = (1−β)·p_S + β·p_T, 0 < β < 1 (see module docstring for the GKD/TRL
    β ∈ {0, 1} endpoints). ``temperature`` divides both logits before the
    softmax. The teacher is detached.
    """
    log_s = log_probs(student_logits, temperature)
    log_t = log_probs(teacher_logits.detach(), temperature)
    return divergence_terms(log_s, log_t, kind, beta).sum(-1)


# --------------------------------------------------------------------------- top-k estimator


def topk_log_probs(
    student_log_probs: Tensor,
    teacher_log_probs: Tensor,
    k: int,
    support: TopKSupport = "teacher",
    tail_bucket: bool = False,
) -> tuple[Tensor, Tensor]:
    """Restrict both distributions to the top-``k`` ids of one side.

    The ids are the ``k`` most likely tokens of ``support`` ("teacher" — OPSD's
    ``top_k_loss`` and TRL SDFT ``topk_logits`` — or "student"), chosen per
    position. Returns normalized log-probs ``(student, teacher)`` of shape
    ``[..., k]``, or ``[..., k + 1]`` with ``tail_bucket=True``:

    * ``tail_bucket=False``: renormalize each side over the k ids
      (``log p(v) − logsumexp_{top-k} log p``).
    * ``tail_bucket=True``: keep the k probabilities as they are and append one
      "tail" entry holding each side's remaining mass ``1 − Σ_{top-k} p``, so
      both still sum to 1 (a coarse-grained but exact-mass distribution).
    """
    if support not in ("teacher", "student"):
        raise ValueError(f"support must be 'teacher' or 'student', got {support!r}")
    vocab = student_log_probs.shape[-1]
    if not 0 < k <= vocab:
        raise ValueError(f"k must be in [1, {vocab}], got {k}")
    teacher_log_probs = teacher_log_probs.detach()
    chooser = teacher_log_probs if support == "teacher" else student_log_probs
    ids = chooser.detach().topk(k, dim=-1).indices
    top_s = student_log_probs.gather(-1, ids)
    top_t = teacher_log_probs.gather(-1, ids)
    if not tail_bucket:
        return (
            top_s - torch.logsumexp(top_s, dim=-1, keepdim=True),
            top_t - torch.logsumexp(top_t, dim=-1, keepdim=True),
        )
    in_top = torch.zeros_like(student_log_probs, dtype=torch.bool).scatter(-1, ids, True)
    return (
        torch.cat([top_s, _log_tail_mass(student_log_probs, in_top)], dim=-1),
        torch.cat([top_t, _log_tail_mass(teacher_log_probs, in_top)], dim=-1),
    )


def _log_tail_mass(log_p: Tensor, in_top: Tensor) -> Tensor:
    """``log Σ_{v ∉ top-k} p(v)`` as ``[..., 1]``; ``-inf`` (with finite gradients) when the tail is empty.

    Summing the complement directly (rather than ``log(1 − Σ top-k)``) is exact
    and avoids cancellation when the top-k already holds almost all the mass.
    """
    rest = log_p.masked_fill(in_top, float("-inf"))
    has_tail = (rest > float("-inf")).any(dim=-1, keepdim=True)
    safe_rest = torch.where(has_tail, rest, torch.zeros_like(rest))
    lse = torch.logsumexp(safe_rest, dim=-1, keepdim=True)
    return torch.where(has_tail, lse, torch.full_like(lse, float("-inf")))


def topk_divergence(
    student_logits: Tensor,
    teacher_logits: Tensor,
    k: int,
    support: TopKSupport = "teacher",
    tail_bucket: bool = False,
    kind: DivergenceKind = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
) -> Tensor:
    """Top-k estimator of :func:`divergence`: restrict to the top-k ids of ``support``
    (see :func:`topk_log_probs`), then the same divergence. ``[..., T, V] → [..., T]``.

    With ``k == V`` it equals the full-vocabulary divergence.
    """
    log_s, log_t = topk_log_probs(
        log_probs(student_logits, temperature),
        log_probs(teacher_logits.detach(), temperature),
        k,
        support,
        tail_bucket,
    )
    return divergence_terms(log_s, log_t, kind, beta).sum(-1)


# --------------------------------------------------------------------------- sampled-token estimator


class SampledTokenReverseKL(NamedTuple):
    """Output of :func:`sampled_token_reverse_kl` (all ``[..., T]``)."""

    surrogate: Tensor
    """``sg(log p_S(y) − log p_T(y)) · log p_S(y)``: differentiate this (then reduce)."""
    log_ratio: Tensor
    """Detached ``log p_S(y) − log p_T(y)``: unbiased single-sample estimate of KL(S‖T), for logging."""


def sampled_token_reverse_kl(
    student_logits: Tensor,
    teacher_logits: Tensor,
    tokens: Tensor,
    temperature: float = 1.0,
) -> SampledTokenReverseKL:
    """Sampled-token (REINFORCE) estimator of the on-policy reverse KL(p_S ‖ p_T).

    ``tokens[..., t]`` are the completion tokens the student sampled at each
    position (shape ``[..., T]``, aligned with the logits' ``T``). With
    ``r(y) = log p_S(y) − log p_T(y)`` (equivalently the per-token reward
    ``−r``, i.e. Thinking-Machines / OPSD ``use_tinker_loss`` advantage with
    discount 0)::

        ∇ KL(p_S ‖ p_T) = Σ_y ∇p_S(y) · (r(y) + 1) = E_{y ~ p_S}[ r(y) · ∇ log p_S(y) ]

    because ``E_{y~p_S}[∇ log p_S(y)] = 0``. So the surrogate
    ``sg(r(y)) · log p_S(y)`` has, in expectation over ``y ~ p_S``, exactly the
    gradient of the full-vocabulary reverse KL (its *value* is not the KL; log
    ``log_ratio`` for that). Unbiased only when ``y`` really is drawn from the
    distribution being differentiated, i.e. sampling temperature == loss
    temperature and no top-k/top-p truncation at sampling time; otherwise it
    is the usual off-policy approximation. Only the reverse direction has such
    an estimator: forward KL needs samples from the teacher.
    """
    log_s = log_probs(student_logits, temperature)
    log_t = log_probs(teacher_logits.detach(), temperature)
    index = tokens.long().unsqueeze(-1)
    log_s_y = log_s.gather(-1, index).squeeze(-1)
    log_t_y = log_t.gather(-1, index).squeeze(-1)
    log_ratio = (log_s_y - log_t_y).detach()
    return SampledTokenReverseKL(surrogate=log_ratio * log_s_y, log_ratio=log_ratio)


# --------------------------------------------------------------------------- pointwise clipping


def clip_pointwise(terms: Tensor, tau: float) -> tuple[Tensor, Tensor]:
    """``min(ℓ, τ)`` per vocabulary entry; returns ``(clipped_terms, was_clipped)``.

    Only summands above τ are capped (negative ones are untouched), so the
    clipped sum can be negative; clipped entries get zero gradient (OPSD
    ``jsd_token_clip``).
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    was_clipped = terms > tau
    return terms.clamp(max=tau), was_clipped


class ClippedDivergence(NamedTuple):
    """Output of :func:`clipped_divergence`."""

    per_token: Tensor
    """``[..., T]``: Σ_v min(ℓ_v, τ)."""
    clip_fraction: Tensor
    """Scalar (detached): clipped entries / vocabulary entries, over the unmasked positions."""


def clipped_divergence(
    student_logits: Tensor,
    teacher_logits: Tensor,
    tau: float,
    kind: DivergenceKind = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    mask: Tensor | None = None,
) -> ClippedDivergence:
    """Full-vocabulary divergence with each per-entry summand clipped at ``tau``.

    OPSD v3: ``kind="forward_kl", tau=0.05``. ``mask`` (``[..., T]``, truthy =
    counted) only restricts which positions enter ``clip_fraction``; the
    per-token values are returned for every position (reduce with
    :func:`reduce_loss`).
    """
    log_s = log_probs(student_logits, temperature)
    log_t = log_probs(teacher_logits.detach(), temperature)
    terms, was_clipped = clip_pointwise(divergence_terms(log_s, log_t, kind, beta), tau)
    clipped_per_token = was_clipped.sum(-1).float()
    vocab = terms.shape[-1]
    if mask is None:
        counted = torch.ones_like(clipped_per_token, dtype=torch.bool)
    else:
        counted = mask.bool()
    n_entries = counted.sum() * vocab
    fraction = (clipped_per_token * counted).sum() / n_entries.clamp(min=1)
    return ClippedDivergence(per_token=terms.sum(-1), clip_fraction=fraction.detach())


# --------------------------------------------------------------------------- reduction


def loss_keep_mask(mask: Tensor, skip_first: int = 0) -> Tensor:
    """The positions a loss counts: ``mask`` (``[B, T]``, truthy = completion token) minus the first
    ``skip_first`` unmasked positions of each row (left or right padding alike)."""
    if skip_first < 0:
        raise ValueError(f"skip_first must be >= 0, got {skip_first}")
    keep = mask.bool()
    if skip_first:
        keep = keep & (keep.long().cumsum(dim=-1) > skip_first)
    return keep


def reduce_loss(
    per_token: Tensor,
    mask: Tensor,
    mode: ReductionMode = "token_mean",
    skip_first: int = 0,
) -> Tensor:
    """Reduce per-token values ``[B, T]`` to a scalar.

    ``mask`` (``[B, T]``, truthy = completion token, falsy = padding/prompt)
    selects the positions; additionally the first ``skip_first`` *unmasked*
    positions of each sequence are dropped (SDFT ``num_loss_tokens_to_skip=3``),
    which works for left and right padding alike.

    * ``"token_mean"``: Σ kept / #kept over the whole batch (OPSD, GKD/TRL).
    * ``"sequence_mean"``: per-sequence mean over its kept tokens, then the mean
      over sequences that have at least one kept token (SDFT).

    Masked positions are excluded with ``torch.where`` so NaN/inf there cannot
    leak into the loss or its gradient. With nothing kept the result is 0
    (still connected to the graph).
    """
    if per_token.shape != mask.shape:
        raise ValueError(f"per_token {tuple(per_token.shape)} and mask {tuple(mask.shape)} differ")
    keep = loss_keep_mask(mask, skip_first)
    values = torch.where(keep, per_token, torch.zeros_like(per_token))
    counts = keep.sum(dim=-1)
    if mode == "token_mean":
        return values.sum() / counts.sum().clamp(min=1)
    if mode == "sequence_mean":
        per_sequence = values.sum(dim=-1) / counts.clamp(min=1)
        has_tokens = counts > 0
        return (per_sequence * has_tokens).sum() / has_tokens.sum().clamp(min=1)
    raise ValueError(f"unknown reduction mode {mode!r}")
