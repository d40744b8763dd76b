"""The `onpolicy` job: alignment of rollouts, teachers (frozen, EMA, live, adapters disabled), the loss over
micro-batches, spec and record errors, off-policy steps, boundary records and exact resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import ENGINE_DIR, STORIES_DIR, engine_env, make_tiny_model
from safetensors.torch import load_file

from distillery_engine.jobs import run_job
from distillery_engine.losses import divergence, loss_keep_mask, reduce_loss
from distillery_engine.models import choose_placement, load_model, load_tokenizer
from distillery_engine.onpolicy import (
    ChatSide,
    LossSpec,
    Teacher,
    completion_logits,
    ema_update,
    is_on_policy,
    micro_loss,
    render_prompt,
    right_aligned,
    validate_spec,
)
from distillery_engine.train import apply_lora, list_checkpoints

CPU = choose_placement("cpu")
RECORDS = [
    {"student": "the cat sat", "teacher": "a cat sat on a mat. the cat sat"},
    {"student": "a dog", "teacher": "dogs run. a dog"},
    {"student": "it was", "teacher": "it was a sunny day. it was"},
    {"student": "one day a", "teacher": "one day a bird sang. one day a"},
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("onpolicy-tiny"))


def write_records(path: Path, records: list[dict[str, Any]] = RECORDS) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def spec_for(tmp_path: Path, model_dir: Path, name: str, **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": "onpolicy",
        "output_dir": str(tmp_path / name),
        "model": str(model_dir),
        "data": str(write_records(tmp_path / "data.jsonl")),
        "sampling": {"max_tokens": 12, "temperature": 1.0},
        "max_steps": 4,
        "batch_size": 2,
        "grad_accum": 1,
        "lr": 3e-3,
        "checkpoint_every": 2,
        "record_every": 2,
    }
    spec.update(overrides)
    return spec


def events_of(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def progress(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "progress"]


def weights(final_dir: str | Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(final_dir) / "model.safetensors"))


# ------------------------------------------------------------------------------------------- forward layout


def test_completion_logits_are_aligned_with_each_rollout(model_dir: Path) -> None:
    model, tok = load_model(model_dir, placement=CPU)
    prompts = [tok("the cat sat")["input_ids"], tok("a")["input_ids"]]
    completions = [[5, 6, 7], [8, 9, 10, 11, 12]]
    logits, mask = completion_logits(model, prompts, completions, tok.pad_token_id, CPU)
    assert logits.shape[:2] == mask.shape == (2, 5)
    assert mask.tolist() == [[False, False, True, True, True], [True] * 5]
    for i, (p, c) in enumerate(zip(prompts, completions)):
        alone = model(torch.tensor([[*p, *c]])).logits[0]
        # the logit predicting completion token t sits at position len(p) - 1 + t of the unpadded row
        expected = alone[len(p) - 1 : len(p) - 1 + len(c)]
        torch.testing.assert_close(logits[i, 5 - len(c):], expected, rtol=1e-5, atol=1e-5)
    tokens = right_aligned(completions, torch.device("cpu"))
    assert tokens.tolist() == [[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]]


# ------------------------------------------------------------------------------------------- the loss


def loss_spec(**kw: Any) -> LossSpec:
    base = dict(kind="forward_kl", beta=0.5, temperature=1.0, estimator="full", topk=4, topk_support="teacher",
                topk_tail=False, clip=None, skip_tokens=0, reduction="token_mean")
    return LossSpec(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("reduction", ["token_mean", "sequence_mean"])
def test_micro_batches_add_up_to_the_step_loss(reduction: str) -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(4, 6, 11, generator=g, requires_grad=True)
    t = torch.randn(4, 6, 11, generator=g)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6, [0, 0, 0, 0, 1, 1], [0, 1, 1, 1, 1, 1]]).bool()
    tokens = torch.zeros(4, 6, dtype=torch.long)
    spec = loss_spec(reduction=reduction, skip_tokens=1)
    whole = reduce_loss(divergence(s, t, "forward_kl"), mask, reduction, skip_first=1)  # type: ignore[arg-type]
    keep = loss_keep_mask(mask, 1)
    denominator = float(keep.sum()) if reduction == "token_mean" else float((keep.sum(-1) > 0).sum())
    parts = [micro_loss(s[i:i + 2], t[i:i + 2], tokens[i:i + 2], mask[i:i + 2], spec, denominator) for i in (0, 2)]
    torch.testing.assert_close(parts[0].loss + parts[1].loss, whole)


def test_gradients_reach_only_the_student() -> None:
    s = torch.randn(2, 3, 7, requires_grad=True)
    t = torch.randn(2, 3, 7, requires_grad=True)
    mask = torch.ones(2, 3, dtype=torch.bool)
    for spec in (loss_spec(), loss_spec(kind="jsd", beta=0.3, clip=0.05), loss_spec(estimator="topk", topk_tail=True),
                 loss_spec(kind="reverse_kl", estimator="sampled_token")):
        micro_loss(s, t, torch.zeros(2, 3, dtype=torch.long), mask, spec, 6.0).loss.backward()
    assert t.grad is None and s.grad is not None and s.grad.abs().sum() > 0


def test_clip_counts_clipped_entries() -> None:
    s = torch.randn(2, 3, 7) * 3
    t = torch.randn(2, 3, 7) * 3
    mask = torch.tensor([[1, 1, 1], [0, 1, 1]]).bool()
    parts = micro_loss(s, t, torch.zeros(2, 3, dtype=torch.long), mask, loss_spec(clip=0.05), 5.0)
    assert parts.clip_entries == 5 * 7 and 0 < parts.clipped < parts.clip_entries
    unclipped = micro_loss(s, t, torch.zeros(2, 3, dtype=torch.long), mask, loss_spec(), 5.0)
    assert parts.loss < unclipped.loss  # only positive summands are capped
    assert parts.kl_sum == pytest.approx(unclipped.kl_sum)  # the logged KL is the unclipped divergence


# ------------------------------------------------------------------------------------------- teachers


def test_ema_update_arithmetic() -> None:
    ema = torch.tensor([1.0, 2.0, -4.0])
    ema_update(ema, torch.tensor([3.0, 2.0, 0.0]), 0.25)
    torch.testing.assert_close(ema, torch.tensor([1.5, 2.0, -3.0]))


def test_adapters_disabled_teacher_is_the_base_model(model_dir: Path, tmp_path: Path) -> None:
    spec = validate_spec(spec_for(tmp_path, model_dir, "x", lora={"r": 4, "alpha": 8}))
    base, tok = load_model(model_dir, placement=CPU)
    student, _ = load_model(model_dir, placement=CPU, for_training=True)
    assert spec.lora is not None
    student = apply_lora(student, spec.lora, 0)
    with torch.no_grad():  # make the adapters matter (B starts at zero)
        for name, p in student.named_parameters():
            if "lora_B" in name:
                p.normal_()
    teacher = Teacher(spec, student, CPU)
    assert teacher.copy is None  # no second copy of the network
    ids = torch.tensor([tok("the cat sat on")["input_ids"]])
    with torch.no_grad():
        with teacher.network() as network:
            teacher_logits = network(ids).logits
        student_logits = student(ids).logits
        base_logits = base(ids).logits
    torch.testing.assert_close(teacher_logits, base_logits, rtol=0, atol=0)
    assert not torch.allclose(student_logits, base_logits)
    assert student.training  # network() restores the mode


def test_lora_ema_teacher_swaps_adapters_without_touching_the_student(model_dir: Path, tmp_path: Path) -> None:
    spec = validate_spec(spec_for(tmp_path, model_dir, "x", lora={"r": 4, "alpha": 8},
                                  teacher={"kind": "ema", "ema_rate": 0.5, "ema_every": 2}))
    student, tok = load_model(model_dir, placement=CPU, for_training=True)
    assert spec.lora is not None
    student = apply_lora(student, spec.lora, 0)
    teacher = Teacher(spec, student, CPU)
    name = next(n for n in teacher.ema if "lora_B" in n)
    param = dict(student.named_parameters())[name]
    with torch.no_grad():
        param.fill_(1.0)
    teacher.after_step(1)  # not an EMA step (every 2)
    assert teacher.ema[name].abs().sum() == 0
    teacher.after_step(2)
    torch.testing.assert_close(teacher.ema[name], torch.full_like(param, 0.5))
    ids = torch.tensor([tok("a dog")["input_ids"]])
    with torch.no_grad(), teacher.network() as network:
        inside = dict(network.named_parameters())[name].clone()
    torch.testing.assert_close(inside, torch.full_like(param, 0.5))
    assert torch.equal(param, torch.ones_like(param))  # the student's own adapter is back
    assert student(ids).logits.requires_grad


def test_frozen_full_teacher_stays_bit_identical_and_gets_no_gradient(model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "frozen"
    initial = weights(model_dir)
    captured: dict[str, Any] = {}
    original_init = Teacher.__init__

    def spy(self: Teacher, *args: Any) -> None:
        original_init(self, *args)
        captured["teacher"] = self

    Teacher.__init__ = spy  # type: ignore[method-assign]
    try:
        summary = run_job(spec_for(tmp_path, model_dir, "frozen"))
    finally:
        Teacher.__init__ = original_init  # type: ignore[method-assign]
    teacher: Teacher = captured["teacher"]
    assert teacher.copy is not None
    for name, p in teacher.copy.named_parameters():
        assert p.grad is None and not p.requires_grad
        assert torch.equal(p.detach(), initial[name]), name
    trained = weights(summary["final_dir"])
    assert any(not torch.equal(trained[n], initial[n]) for n in initial)
    assert (out / "done.json").is_file()


# ------------------------------------------------------------------------------------------- the job


@pytest.mark.parametrize(
    "overrides",
    [
        {"loss": {"divergence": "forward_kl", "clip": 0.05}, "lora": {"r": 4, "alpha": 8}},
        {"loss": {"divergence": "jsd", "beta": 0.5, "estimator": "topk", "topk": 5, "topk_tail": True}},
        {"loss": {"divergence": "reverse_kl", "estimator": "sampled_token"}, "teacher": {"kind": "live"}},
        {"loss": {"skip_tokens": 3, "reduction": "sequence_mean"}, "teacher": {"kind": "ema"}, "sampling": {"n": 2, "max_tokens": 8}},
    ],
    ids=["opsd-like", "topk-jsd", "sampled-token", "sdft-like"],
)
def test_job_runs_and_logs_metrics(model_dir: Path, tmp_path: Path, overrides: dict[str, Any]) -> None:
    summary = run_job(spec_for(tmp_path, model_dir, "run", **overrides))
    out = tmp_path / "run"
    steps = progress(events_of(out))
    assert [e["step"] for e in steps] == [1, 2, 3, 4]
    for e in steps:
        assert all(k in e for k in ("loss", "kl", "clip_fraction", "entropy", "completion_length", "truncation_rate"))
        assert e["kl"] >= 0 and e["entropy"] > 0 and 0 <= e["truncation_rate"] <= 1
    clip = overrides.get("loss", {}).get("clip")
    assert all((e["clip_fraction"] is not None) == (clip is not None) for e in steps)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    assert summary["steps"] == 4 and Path(summary["final_dir"], "config.json").is_file()
    if "lora" in overrides:
        assert Path(summary["adapter_dir"]).is_dir()


def test_boundaries_record_the_exact_token_ids(model_dir: Path, tmp_path: Path) -> None:
    run_job(spec_for(tmp_path, model_dir, "b", teacher_prefill=" so"))
    lines = [json.loads(line) for line in (tmp_path / "b" / "boundaries.jsonl").read_text().splitlines()]
    assert [b["step"] for b in lines] == [1, 2, 4]
    tok = load_tokenizer(model_dir)
    for b in lines:
        rec = RECORDS[b["record_line"] - 1]
        assert b["student"]["prompt_text"] == rec["student"]
        assert b["teacher"]["prompt_text"] == rec["teacher"] + " so"
        assert b["student"]["prompt_tail_ids"] == tok(rec["student"])["input_ids"][-16:]
        # one rollout, scored verbatim by both sides
        assert b["student"]["completion_head_ids"] == b["teacher"]["completion_head_ids"]


def test_off_policy_steps_use_the_records_completions(model_dir: Path, tmp_path: Path) -> None:
    records = [{**r, "completion": " and then it ran"} for r in RECORDS]
    spec = spec_for(tmp_path, model_dir, "off", lmbda=0.0, data=str(write_records(tmp_path / "c.jsonl", records)))
    run_job(spec)
    lines = [json.loads(line) for line in (tmp_path / "off" / "boundaries.jsonl").read_text().splitlines()]
    tok = load_tokenizer(model_dir)
    expected = tok(" and then it ran", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert all(not b["on_policy"] and b["student"]["completion_head_ids"] == expected[:16] for b in lines)
    assert [is_on_policy(0, s, 0.5) for s in range(6)] == [is_on_policy(0, s, 0.5) for s in range(6)]
    assert 0 < sum(is_on_policy(0, s, 0.5) for s in range(200)) < 200


def test_separate_teacher_distillation(model_dir: Path, tmp_path: Path) -> None:
    teacher_dir = make_tiny_model(tmp_path / "teacher", seed=7)
    summary = run_job(spec_for(tmp_path, model_dir, "d", teacher_model=str(teacher_dir),
                               loss={"divergence": "jsd", "beta": 0.5, "temperature": 0.9}))
    assert summary["steps"] == 4
    other = make_tiny_model(tmp_path / "other-vocab", alphabet="abc \n")
    with pytest.raises(ValueError, match="tokenizer differs"):
        run_job(spec_for(tmp_path, model_dir, "d2", teacher_model=str(other)))


def test_chat_templates_render_per_side(model_dir: Path) -> None:
    tok = load_tokenizer(model_dir)
    tok.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% if enable_thinking is defined and not enable_thinking %}"
        "<nothink>{% endif %}{% endif %}"
    )
    plain = render_prompt(tok, "a dog", ChatSide(False, None))
    assert plain.text == "a dog" and plain.ids == tok("a dog")["input_ids"]
    student = render_prompt(tok, "a dog", ChatSide(True, False))
    teacher = render_prompt(tok, "a dog", ChatSide(True, True), prefill="so")
    assert student.text == "<user>a dog\n<assistant><nothink>"
    assert teacher.text == "<user>a dog\n<assistant>so"
    assert teacher.ids == tok("<user>a dog\n<assistant>so", add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"loss": {"divergence": "forward_kl", "estimator": "sampled_token"}}, "reverse_kl only"),
        ({"loss": {"divergence": "reverse_kl", "estimator": "sampled_token", "clip": 0.1}}, "does not apply"),
        ({"loss": {"divergenc": "forward_kl"}}, "unknown loss keys"),
        ({"teacher": {"kind": "ema", "ema_rate": 0}}, "ema_rate"),
        ({"lmbda": 1.5}, "lmbda"),
        ({"sampling": {"top_q": 1}}, "unknown sampling keys"),
        ({"max_steps": None}, "exactly one of"),
        ({"teachr": 1}, "unknown keys"),
    ],
)
def test_spec_validation(model_dir: Path, tmp_path: Path, change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_spec(spec_for(tmp_path, model_dir, "v", **change))


def test_jsd_beta_endpoints_map_to_kl(model_dir: Path, tmp_path: Path) -> None:
    assert validate_spec(spec_for(tmp_path, model_dir, "v", loss={"divergence": "jsd", "beta": 0})).loss.kind == "forward_kl"
    assert validate_spec(spec_for(tmp_path, model_dir, "v", loss={"divergence": "jsd", "beta": 1})).loss.kind == "reverse_kl"


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"student": "a", "teacher": "b"}', "not json"], r"data.jsonl:2: not valid JSON"),
        (['{"student": "a"}'], r'data.jsonl:1: needs a non-empty string field "teacher"'),
        (['{"student": "a", "teacher": "b", "extra": 1}'], r"data.jsonl:1: unknown fields \['extra'\]"),
        (['{"student": "' + "a" * 200 + '", "teacher": "b"}'], r"data.jsonl:1: the student prompt .* exceeds"),
    ],
)
def test_bad_records_name_their_line(model_dir: Path, tmp_path: Path, lines: list[str], message: str) -> None:
    spec = spec_for(tmp_path, model_dir, "bad")
    Path(spec["data"]).write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=message):
        run_job(spec)


# ------------------------------------------------------------------------------------------- exact resume

KILLER = """
import os, signal, sys
from distillery_engine.jobs import load_job, run_job

def sink(event):
    if event["type"] == "progress" and event["step"] == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)

run_job(load_job(sys.argv[1]), sink=sink)
"""


def test_killed_run_continues_the_same_trajectory(model_dir: Path, tmp_path: Path) -> None:
    # EMA teacher + grad accumulation + several epochs: everything a resume must restore.
    common: dict[str, Any] = dict(max_steps=6, batch_size=1, grad_accum=2, checkpoint_every=2,
                                  teacher={"kind": "ema", "ema_rate": 0.2}, loss={"skip_tokens": 1})
    reference = run_job(spec_for(tmp_path, model_dir, "reference", **common))
    reference_steps = progress(events_of(tmp_path / "reference"))

    spec = spec_for(tmp_path, model_dir, "resumed", **common)
    job = tmp_path / "job.json"
    job.write_text(json.dumps(spec))
    env = {**engine_env(), "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, "-c", KILLER, str(job), "5"], env=env, cwd=ENGINE_DIR,
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    out = Path(spec["output_dir"])
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-2", "step-4"]
    assert (out / "checkpoints" / "step-4" / "ema_teacher.safetensors").is_file()
    rerun = subprocess.run([sys.executable, "-m", "distillery_engine.jobs", str(job)], env=env, cwd=ENGINE_DIR,
                           capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    after = progress(events_of(out))[5:]  # the killed attempt logged steps 1..5
    assert [e["step"] for e in after] == [5, 6]
    assert [e["loss"] for e in after] == [e["loss"] for e in reference_steps[4:]]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    a, b = weights(reference["final_dir"]), weights(json.loads((out / "done.json").read_text())["summary"]["final_dir"])
    assert all(torch.equal(a[n], b[n]) for n in a)


# ------------------------------------------------------------------------------------------- the real model


@pytest.mark.skipif(not (STORIES_DIR / "config.json").is_file(), reason=f"stories260k not found at {STORIES_DIR}")
def test_stories260k_self_distillation_lowers_the_teacher_gap(tmp_path: Path) -> None:
    # The teacher sees a story opening that the student does not; distilling it into the student shrinks the
    # divergence measured on fresh rollouts.
    records = [{"student": p, "teacher": f"Lily and her dog played in the park. {p}"}
               for p in ("Once upon a time", "One day", "The girl", "The boy", "Lily saw", "Tom had")]
    spec = {
        "type": "onpolicy", "output_dir": str(tmp_path / "stories"), "model": str(STORIES_DIR),
        "data": str(write_records(tmp_path / "stories.jsonl", records)),
        "sampling": {"max_tokens": 16}, "max_steps": 30, "batch_size": 6, "lr": 5e-4, "checkpoint_every": None,
        "teacher": {"kind": "frozen"}, "loss": {"skip_tokens": 0},
    }
    summary = run_job(spec)
    assert summary["mean_kl_last"] < 0.7 * summary["mean_kl_first"]  # measured: 0.126 -> 0.04 (5-step means)


# ------------------------------------------------------------------------------------------- TRL cross-check

_TRL_SITE = Path(__file__).resolve().parents[2] / "bench/.pydeps/site-packages"


def _trl_sdft_losses():
    if not _TRL_SITE.is_dir():
        pytest.skip(f"trl not available: {_TRL_SITE} does not exist")
    if str(_TRL_SITE) not in sys.path:
        sys.path.append(str(_TRL_SITE))
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            from trl.experimental.sdft import loss_utils
        except Exception as exc:  # pragma: no cover - depends on the bench install
            pytest.skip(f"trl.experimental.sdft not importable: {exc!r}")
    return loss_utils


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("estimator", ["full", "topk", "topk_tail"])
def test_matches_trl_sdft_losses(alpha: float, estimator: str) -> None:
    trl = _trl_sdft_losses()
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(2, 5, 13, generator=g) * 2, torch.randn(2, 5, 13, generator=g) * 2
    mask = torch.ones(2, 5, dtype=torch.bool)
    if alpha == 0.0:
        kind = "forward_kl"
    elif alpha == 1.0:
        kind = "reverse_kl"
    else:
        kind = "jsd"
    if estimator == "full":
        theirs = trl.compute_full_logit_self_distillation_loss(s, t, distillation_alpha=alpha)
        spec = loss_spec(kind=kind, beta=alpha)
    else:
        tail = estimator == "topk_tail"
        theirs = trl.compute_topk_self_distillation_loss(s, t, distillation_topk=4, distillation_alpha=alpha,
                                                         distillation_add_tail=tail)
        spec = loss_spec(kind=kind, beta=alpha, estimator="topk", topk=4, topk_support="student", topk_tail=tail)
    ours = micro_loss(s, t, torch.zeros(2, 5, dtype=torch.long), mask, spec, 10.0).loss
    torch.testing.assert_close(ours, theirs.mean(), rtol=1e-5, atol=1e-6)
