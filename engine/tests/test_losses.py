"""Unit tests for distillery_engine.losses: direction conventions, estimators, clipping, reductions."""

from __future__ import annotations

import math
import os
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from distillery_engine.losses import (
    clip_pointwise,
    clipped_divergence,
    divergence,
    divergence_terms,
    kind_from_beta,
    log_probs,
    reduce_loss,
    sampled_token_reverse_kl,
    topk_divergence,
    topk_log_probs,
)

B, T, V = 2, 3, 7


def _logits(seed: int, scale: float = 2.0, shape: tuple[int, ...] = (B, T, V)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64) * scale


def _probs(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    return torch.softmax(logits.double() / temperature, dim=-1)


# Direct textbook formulas written with explicit probabilities (float64).
def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return (p * (p.log() - q.log())).sum(-1)


def _jsd(p_s: torch.Tensor, p_t: torch.Tensor, beta: float) -> torch.Tensor:
    m = (1 - beta) * p_s + beta * p_t
    return beta * _kl(p_t, m) + (1 - beta) * _kl(p_s, m)


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> None:
    torch.testing.assert_close(a.double(), b.double(), atol=atol, rtol=1e-4)


# --------------------------------------------------------------------------- full vocabulary


@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.0])
def test_divergences_match_direct_formulas(temperature: float) -> None:
    s, t = _logits(0), _logits(1)
    p_s, p_t = _probs(s, temperature), _probs(t, temperature)
    out_fwd = divergence(s, t, "forward_kl", temperature=temperature)
    assert out_fwd.shape == (B, T) and out_fwd.dtype == torch.float32
    _close(out_fwd, _kl(p_t, p_s))
    _close(divergence(s, t, "reverse_kl", temperature=temperature), _kl(p_s, p_t))
    for beta in (0.1, 0.5, 0.9):
        _close(divergence(s, t, "jsd", beta=beta, temperature=temperature), _jsd(p_s, p_t, beta))


def test_forward_and_reverse_differ_on_hand_made_pair() -> None:
    # teacher: sure of token 0; student: uniform over two tokens.
    p_t = torch.tensor([0.9, 0.1])
    p_s = torch.tensor([0.5, 0.5])
    s, t = p_s.log(), p_t.log()
    fwd = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)  # KL(T||S) ≈ 0.3681
    rev = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)  # KL(S||T) ≈ 0.5108
    assert divergence(s, t, "forward_kl").item() == pytest.approx(fwd, abs=1e-6)
    assert divergence(s, t, "reverse_kl").item() == pytest.approx(rev, abs=1e-6)
    assert abs(fwd - rev) > 0.1


def test_kl_direction_matches_torch_kl_div() -> None:
    s, t = _logits(2), _logits(3)
    log_s, log_t = F.log_softmax(s.float(), -1), F.log_softmax(t.float(), -1)
    # PyTorch's kl_div(input, target) is KL(target || input).
    torch_fwd = F.kl_div(log_s, log_t, reduction="none", log_target=True).sum(-1)
    torch_rev = F.kl_div(log_t, log_s, reduction="none", log_target=True).sum(-1)
    _close(divergence(s, t, "forward_kl"), torch_fwd)
    _close(divergence(s, t, "reverse_kl"), torch_rev)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_nonnegative_and_zero_for_identical(kind: str) -> None:
    for seed in range(5):
        s, t = _logits(10 + seed, scale=4.0), _logits(20 + seed, scale=4.0)
        assert (divergence(s, t, kind) >= -1e-6).all()
        assert divergence(s, s.clone(), kind).abs().max() < 1e-6


def test_jsd_bounded_by_ln2_and_symmetric_at_half() -> None:
    s, t = _logits(4, scale=10.0), _logits(5, scale=10.0)
    jsd = divergence(s, t, "jsd", beta=0.5)
    assert (jsd <= math.log(2) + 1e-6).all()
    _close(jsd, divergence(t, s, "jsd", beta=0.5))
    # disjoint supports reach the bound
    a = torch.tensor([0.0, float("-inf")])
    b = torch.tensor([float("-inf"), 0.0])
    assert divergence(a, b, "jsd", beta=0.5).item() == pytest.approx(math.log(2), abs=1e-6)


def test_jsd_limits_match_kls_as_documented() -> None:
    s, t = _logits(6), _logits(7)
    fwd = divergence(s, t, "forward_kl").double()
    rev = divergence(s, t, "reverse_kl").double()
    eps = 1e-4
    # JSD(β)/β → KL(T‖S) as β → 0;  JSD(β)/(1−β) → KL(S‖T) as β → 1 (error O(β)); JSD → 0 at both ends.
    jsd_lo = divergence(s, t, "jsd", beta=eps).double()
    jsd_hi = divergence(s, t, "jsd", beta=1 - eps).double()
    torch.testing.assert_close(jsd_lo / eps, fwd, rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(jsd_hi / eps, rev, rtol=1e-2, atol=1e-3)
    # ... and the approximation improves as β → 0
    err = [(divergence(s, t, "jsd", beta=b).double() / b - fwd).abs().max() for b in (1e-3, 1e-4)]
    assert err[1] < err[0] / 5
    assert divergence(s, t, "jsd", beta=eps).abs().max() < 1e-3
    assert divergence(s, t, "jsd", beta=1 - eps).abs().max() < 1e-3
    # GKD/TRL endpoint mapping
    assert kind_from_beta(0.0) == ("forward_kl", 0.0)
    assert kind_from_beta(1.0) == ("reverse_kl", 1.0)
    assert kind_from_beta(0.3) == ("jsd", 0.3)
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError):
            divergence(s, t, "jsd", beta=bad)
    with pytest.raises(ValueError):
        kind_from_beta(1.5)


def test_temperature_divides_both_logits() -> None:
    s, t = _logits(8), _logits(9)
    for kind in ("forward_kl", "reverse_kl", "jsd"):
        _close(divergence(s, t, kind, temperature=2.0), divergence(s / 2, t / 2, kind))
    # high temperature flattens both distributions toward uniform
    assert (divergence(s, t, "forward_kl", temperature=100.0) < divergence(s, t, "forward_kl")).all()
    with pytest.raises(ValueError):
        log_probs(s, temperature=0.0)


def test_computes_in_float32_for_half_inputs() -> None:
    s, t = _logits(10).to(torch.bfloat16), _logits(11).to(torch.bfloat16)
    out = divergence(s, t, "forward_kl")
    assert out.dtype == torch.float32
    _close(out, _kl(_probs(t.float()), _probs(s.float())), atol=1e-4)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_neg_inf_logits_are_handled(kind: str) -> None:
    s, t = _logits(12), _logits(13)
    s_masked, t_masked = s.clone(), t.clone()
    s_masked[..., -2:] = float("-inf")
    t_masked[..., -2:] = float("-inf")
    s_masked.requires_grad_(True)
    out = divergence(s_masked, t_masked, kind)
    _close(out, divergence(s[..., :-2], t[..., :-2], kind))
    out.sum().backward()
    assert torch.isfinite(s_masked.grad).all()
    # teacher mass where the student has none: forward KL is +inf, reverse KL finite
    a = torch.tensor([0.0, float("-inf")])
    b = torch.tensor([0.0, 0.0])
    assert divergence(a, b, "forward_kl").item() == math.inf
    assert divergence(a, b, "reverse_kl").item() == pytest.approx(math.log(2), abs=1e-6)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_gradients_reach_student_only(kind: str) -> None:
    s = _logits(14).float().requires_grad_(True)
    t = _logits(15).float().requires_grad_(True)
    losses = [
        divergence(s, t, kind),
        topk_divergence(s, t, k=3, tail_bucket=True, kind=kind),
        clipped_divergence(s, t, tau=0.05, kind=kind).per_token,
        sampled_token_reverse_kl(s, t, torch.zeros(B, T, dtype=torch.long)).surrogate,
    ]
    for loss in losses:
        s.grad = None
        loss.sum().backward()
        assert s.grad is not None and s.grad.abs().sum() > 0
        assert t.grad is None


def test_analytic_gradient_of_forward_kl() -> None:
    # d KL(T||S) / d student_logits = p_S - p_T
    s = _logits(16).float().requires_grad_(True)
    t = _logits(17).float()
    divergence(s, t, "forward_kl").sum().backward()
    _close(s.grad, (_probs(s.detach()) - _probs(t)).float())


# --------------------------------------------------------------------------- top-k


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
@pytest.mark.parametrize("support", ["teacher", "student"])
@pytest.mark.parametrize("tail_bucket", [False, True])
def test_topk_with_full_vocab_equals_full(kind: str, support: str, tail_bucket: bool) -> None:
    s, t = _logits(18), _logits(19)
    _close(
        topk_divergence(s, t, k=V, support=support, tail_bucket=tail_bucket, kind=kind, temperature=0.8),
        divergence(s, t, kind, temperature=0.8),
    )


def test_topk_renormalizes_over_support_ids() -> None:
    s, t = _logits(20), _logits(21)
    k = 3
    p_s, p_t = _probs(s), _probs(t)
    for support, chooser in (("teacher", p_t), ("student", p_s)):
        ids = chooser.topk(k, dim=-1).indices
        q_s = p_s.gather(-1, ids)
        q_t = p_t.gather(-1, ids)
        q_s, q_t = q_s / q_s.sum(-1, keepdim=True), q_t / q_t.sum(-1, keepdim=True)
        _close(topk_divergence(s, t, k, support=support, kind="forward_kl"), _kl(q_t, q_s))
        _close(topk_divergence(s, t, k, support=support, kind="reverse_kl"), _kl(q_s, q_t))
    # the two supports generally pick different ids
    assert not torch.equal(p_s.topk(k, -1).indices, p_t.topk(k, -1).indices)


def test_tail_bucket_conserves_mass_and_matches_formula() -> None:
    s, t = _logits(22), _logits(23)
    k = 2
    log_s, log_t = topk_log_probs(log_probs(s), log_probs(t), k, support="teacher", tail_bucket=True)
    assert log_s.shape == (B, T, k + 1)
    _close(log_s.exp().sum(-1), torch.ones(B, T))
    _close(log_t.exp().sum(-1), torch.ones(B, T))
    p_s, p_t = _probs(s), _probs(t)
    ids = p_t.topk(k, -1).indices
    q_s = torch.cat([p_s.gather(-1, ids), 1 - p_s.gather(-1, ids).sum(-1, keepdim=True)], -1)
    q_t = torch.cat([p_t.gather(-1, ids), 1 - p_t.gather(-1, ids).sum(-1, keepdim=True)], -1)
    _close(topk_divergence(s, t, k, tail_bucket=True, kind="forward_kl"), _kl(q_t, q_s))
    # coarse-graining can only lose information: bucketed KL <= full KL
    assert (topk_divergence(s, t, k, tail_bucket=True) <= divergence(s, t, "forward_kl") + 1e-6).all()
    with pytest.raises(ValueError):
        topk_divergence(s, t, k=V + 1)


# --------------------------------------------------------------------------- sampled token


def test_sampled_token_values() -> None:
    s, t = _logits(24), _logits(25)
    tokens = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(0))
    out = sampled_token_reverse_kl(s, t, tokens, temperature=1.3)
    expected = (
        _probs(s, 1.3).log().gather(-1, tokens[..., None]) - _probs(t, 1.3).log().gather(-1, tokens[..., None])
    ).squeeze(-1)
    _close(out.log_ratio, expected)
    assert not out.log_ratio.requires_grad


def test_sampled_token_gradient_is_reverse_kl_gradient_in_expectation() -> None:
    # Enumerate every token: Σ_y p_S(y) ∇ surrogate(y) must equal ∇ KL(S‖T) exactly.
    s0, t = _logits(26).float(), _logits(27).float()
    p_s = _probs(s0).float()
    expected_grad = torch.zeros_like(s0)
    for y in range(V):
        s = s0.clone().requires_grad_(True)
        tokens = torch.full((B, T), y, dtype=torch.long)
        surrogate = sampled_token_reverse_kl(s, t, tokens).surrogate
        (surrogate * p_s[..., y]).sum().backward()
        expected_grad += s.grad
    s = s0.clone().requires_grad_(True)
    divergence(s, t, "reverse_kl").sum().backward()
    _close(expected_grad, s.grad)
    # expectation of the logged estimate is the reverse KL itself
    est = sum(p_s[..., y] * sampled_token_reverse_kl(s0, t, torch.full((B, T), y)).log_ratio for y in range(V))
    _close(est, divergence(s0, t, "reverse_kl"))


# --------------------------------------------------------------------------- clipping


def test_clip_pointwise_and_fraction() -> None:
    terms = torch.tensor([[0.01, 0.2, -0.3, 0.06], [0.0, 0.05, 0.051, -1.0]])
    clipped, was = clip_pointwise(terms, 0.05)
    torch.testing.assert_close(clipped, torch.tensor([[0.01, 0.05, -0.3, 0.05], [0.0, 0.05, 0.05, -1.0]]))
    assert was.tolist() == [[False, True, False, True], [False, False, True, False]]

    s, t = _logits(28, scale=3.0), _logits(29, scale=3.0)
    tau = 0.05
    terms = divergence_terms(log_probs(s), log_probs(t), "forward_kl")
    out = clipped_divergence(s, t, tau=tau, kind="forward_kl")
    _close(out.per_token, terms.clamp(max=tau).sum(-1))
    frac = (terms > tau).float().mean()
    assert 0 < frac < 1
    assert out.clip_fraction.item() == pytest.approx(frac.item())
    # mask restricts the fraction to unmasked positions
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    masked = clipped_divergence(s, t, tau=tau, mask=mask)
    assert masked.clip_fraction.item() == pytest.approx((terms[0, :2] > tau).float().mean().item())
    # huge tau -> nothing clipped, equals the plain divergence
    loose = clipped_divergence(s, t, tau=1e9)
    assert loose.clip_fraction.item() == 0.0
    _close(loose.per_token, divergence(s, t, "forward_kl"))


def test_clipped_entries_get_no_gradient() -> None:
    s = _logits(30, scale=3.0).float().requires_grad_(True)
    t = _logits(31, scale=3.0).float()
    clipped_divergence(s, t, tau=1e-9).per_token.sum().backward()
    # with every positive term capped only the negative terms carry gradient; still finite
    assert torch.isfinite(s.grad).all()


# --------------------------------------------------------------------------- reductions


def test_reduce_loss_modes_and_skip_first() -> None:
    per_token = torch.tensor([[1.0, 2.0, 3.0, 4.0, float("nan")], [10.0, 20.0, float("inf"), 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    assert reduce_loss(per_token, mask, "token_mean").item() == pytest.approx((1 + 2 + 3 + 4 + 10 + 20) / 6)
    assert reduce_loss(per_token, mask, "sequence_mean").item() == pytest.approx((2.5 + 15) / 2)
    # skip the first 1 completion token of each sequence
    assert reduce_loss(per_token, mask, "token_mean", skip_first=1).item() == pytest.approx((2 + 3 + 4 + 20) / 4)
    assert reduce_loss(per_token, mask, "sequence_mean", skip_first=1).item() == pytest.approx((3 + 20) / 2)
    # SDFT skip 3: second sequence has no tokens left -> excluded from the sequence mean
    assert reduce_loss(per_token, mask, "sequence_mean", skip_first=3).item() == pytest.approx(4.0)
    assert reduce_loss(per_token, mask, "token_mean", skip_first=3).item() == pytest.approx(4.0)
    # nothing left at all -> 0, finite
    assert reduce_loss(per_token, mask, "token_mean", skip_first=10).item() == 0.0
    assert reduce_loss(per_token, mask, "sequence_mean", skip_first=10).item() == 0.0
    with pytest.raises(ValueError):
        reduce_loss(per_token, mask, "batch_sum")  # type: ignore[arg-type]


def test_reduce_loss_skip_first_with_left_padding() -> None:
    per_token = torch.tensor([[9.0, 9.0, 1.0, 2.0, 3.0]])
    mask = torch.tensor([[0, 0, 1, 1, 1]])
    assert reduce_loss(per_token, mask, "token_mean", skip_first=2).item() == pytest.approx(3.0)


def test_reduce_loss_gradient_ignores_masked_nan() -> None:
    per_token = torch.tensor([[1.0, float("nan")], [2.0, 3.0]], requires_grad=True)
    mask = torch.tensor([[1, 0], [1, 1]])
    reduce_loss(per_token, mask, "sequence_mean").backward()
    torch.testing.assert_close(per_token.grad, torch.tensor([[0.5, 0.0], [0.25, 0.25]]))


def test_end_to_end_loss_backward() -> None:
    s = _logits(32).float().requires_grad_(True)
    t = _logits(33).float()
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    loss = reduce_loss(divergence(s, t, "forward_kl"), mask, "sequence_mean", skip_first=1)
    loss.backward()
    assert torch.isfinite(loss) and s.grad[1, 2].abs().sum() == 0 and s.grad[0, 0].abs().sum() == 0


# --------------------------------------------------------------------------- TRL cross-check

_TRL_SITE = Path(__file__).resolve().parents[2] / "bench/.pydeps/site-packages"


def _trl_generalized_jsd_loss():
    if not _TRL_SITE.is_dir():
        pytest.skip(f"trl not available: {_TRL_SITE} does not exist")
    if str(_TRL_SITE) not in sys.path:
        sys.path.append(str(_TRL_SITE))  # appended: the engine venv's own packages (torch) win
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from trl.experimental.gkd import GKDTrainer
        except Exception as exc:  # pragma: no cover - depends on the bench install
            pytest.skip(f"trl.experimental.gkd not importable: {exc!r}")
    return GKDTrainer.generalized_jsd_loss


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 0.9])
def test_matches_trl_generalized_jsd_loss(beta: float, temperature: float) -> None:
    trl_loss = _trl_generalized_jsd_loss()
    s, t = _logits(40).float(), _logits(41).float()
    kind, b = kind_from_beta(beta)
    ours = divergence(s, t, kind, beta=b, temperature=temperature)
    # num_items_in_batch makes TRL's reduction an explicit token mean (sum / #tokens).
    theirs_mean = trl_loss(s, t, beta=beta, temperature=temperature, num_items_in_batch=B * T)
    _close(reduce_loss(ours, torch.ones(B, T), "token_mean"), theirs_mean)
    # per-token: one position at a time
    for i in range(B):
        for j in range(T):
            s_ij, t_ij = s[i : i + 1, j : j + 1], t[i : i + 1, j : j + 1]
            one = trl_loss(s_ij, t_ij, beta=beta, temperature=temperature, num_items_in_batch=1)
            _close(ours[i, j], one)
    # masked token mean with labels == -100 matches our mask
    labels = torch.tensor([[5, 5, -100], [5, -100, -100]])
    theirs_masked = trl_loss(s, t, labels=labels, beta=beta, temperature=temperature, num_items_in_batch=3)
    _close(reduce_loss(ours, labels != -100, "token_mean"), theirs_masked)
