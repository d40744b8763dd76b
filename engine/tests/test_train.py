"""The `train` job: data handling, schedule, full and LoRA training, saving, exact resume, spec validation."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import ENGINE_DIR, engine_env, make_tiny_model
from safetensors.torch import load_file

from distillery_engine.data import (
    IGNORE_INDEX,
    Example,
    collate,
    encode_continuation,
    load_examples,
    tokenize_example,
    tokenize_examples,
)
from distillery_engine.jobs import run_job
from distillery_engine.models import (
    build_char_tokenizer,
    build_model_from_config,
    build_piece_tokenizer,
    choose_placement,
    load_model,
    load_tokenizer,
    save_model,
)
from distillery_engine.train import (
    config_for_tokenizer,
    list_checkpoints,
    lr_factor,
    step_microbatches,
    steps_per_epoch,
    token_loss_sum,
    validate_spec,
)

ALPHABET = "0123456789+=; "
TINY_CONFIG: dict[str, Any] = {
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "tie_word_embeddings": True,
}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sums_data(path: Path, n: int = 64) -> Path:
    rows = [{"prompt": f"{a}+{b}=", "completion": f"{a + b};"} for a, b in ((i * 7 % 50, i * 13 % 50) for i in range(n))]
    return write_jsonl(path, rows)


def tiny_spec(tmp_path: Path, name: str = "run", **overrides: Any) -> dict[str, Any]:
    data = tmp_path / "sums.jsonl"
    if not data.exists():
        sums_data(data)
    spec: dict[str, Any] = {
        "type": "train",
        "output_dir": str(tmp_path / name),
        "data": str(data),
        "init": {"config": dict(TINY_CONFIG), "tokenizer": {"kind": "char", "alphabet": ALPHABET}},
        "max_seq_len": 32,
        "lr": 1e-2,
        "max_steps": 12,
        "batch_size": 16,
        "checkpoint_every": None,
    }
    spec.update(overrides)
    return spec


def read_events(output_dir: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (Path(output_dir) / "events.jsonl").read_text().splitlines()]


def train(spec: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run a job in this process as the engine does; return its done summary and all events written so far."""
    done = run_job(spec)
    summary = {k: v for k, v in done.items() if k not in ("time", "type")}
    return summary, read_events(spec["output_dir"])


def progress(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == "progress"]


def char_tokenizer(tmp_path: Path):
    build_char_tokenizer(ALPHABET, tmp_path / "tok")
    return load_tokenizer(tmp_path / "tok")


# ------------------------------------------------------------------------------------------------- data


def test_load_examples_reports_line_numbers(tmp_path: Path) -> None:
    good = '{"prompt": "1+1=", "completion": "2;"}\n'
    cases = {
        "not json": (good + "{oops\n", ":2: not valid JSON"),
        "missing": (good + "\n" + '{"prompt": "x"}\n', ":3: missing field 'completion'"),
        "type": ('{"prompt": 1, "completion": "2"}\n', ":1: field 'prompt' must be a string"),
        "array": ("[1, 2]\n", ":1: expected a JSON object"),
        "empty": ("\n\n", "no examples"),
    }
    for name, (text, message) in cases.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            load_examples(path)
    path = tmp_path / "ok.jsonl"
    path.write_text(good + "\n" + '{"prompt": "", "completion": "x", "extra": 1}\n')
    assert load_examples(path) == [Example("1+1=", "2;", 1), Example("", "x", 3)]


def test_completion_only_labels_mask_the_prompt(tmp_path: Path) -> None:
    tok = char_tokenizer(tmp_path)
    bos, eos, pad = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    ids = {ch: tok.convert_tokens_to_ids(ch) for ch in ALPHABET}
    short = tokenize_example(tok, Example("1+2=", "3;", 1), "completion")
    long = tokenize_example(tok, Example("12+34=", "46;", 2), "completion")
    assert short is not None and long is not None
    assert short.input_ids == [bos, ids["1"], ids["+"], ids["2"], ids["="], ids["3"], ids[";"], eos]
    batch = collate([short, long], pad)
    m = IGNORE_INDEX
    assert batch["labels"].tolist() == [
        [m, m, m, m, m, ids["3"], ids[";"], eos, m, m, m],  # prompt and right padding carry no loss
        [m, m, m, m, m, m, m, ids["4"], ids["6"], ids[";"], eos],
    ]
    assert batch["attention_mask"].tolist() == [[1] * 8 + [0] * 3, [1] * 11]
    assert batch["input_ids"][0, 8:].tolist() == [pad] * 3
    everything = tokenize_example(tok, Example("1+2=", "3;", 1), "all")
    assert everything is not None and everything.labels == everything.input_ids

    # chat_template wraps the prompt as a user turn with the assistant turn opened; the template's own BOS is
    # the only one (no second BOS from the tokenizer).
    tok.chat_template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}{% if add_generation_prompt %}={% endif %}"
    chat = tokenize_example(tok, Example("1+2", "3;", 1), "completion", chat_template=True)
    assert chat is not None and chat.input_ids == short.input_ids and chat.labels == short.labels

    # Truncation keeps the prompt start; an example whose completion is cut off entirely is dropped.
    cut = tokenize_example(tok, Example("1+2=", "3;", 1), "completion", max_seq_len=6)
    assert cut is not None and cut.input_ids == short.input_ids[:6] and cut.labels[-1] == ids["3"]
    dataset = tokenize_examples(tok, [Example("1+2=", "3;", 1), Example("1234567+1=", "1234568;", 2)], max_seq_len=8)
    assert (dataset.total, dataset.dropped, len(dataset.examples)) == (2, 1, 1)


def test_data_order_is_a_seeded_permutation_per_epoch() -> None:
    n, batch, accum = 10, 2, 2
    assert steps_per_epoch(n, batch, accum) == 3
    epoch0 = [i for s in range(3) for mb in step_microbatches(s, n, batch, accum, seed=1) for i in mb]
    epoch1 = [i for s in range(3, 6) for mb in step_microbatches(s, n, batch, accum, seed=1) for i in mb]
    assert sorted(epoch0) == sorted(epoch1) == list(range(n))  # every example once per epoch
    assert epoch0 != epoch1  # reshuffled each epoch
    assert step_microbatches(2, n, batch, accum, seed=1) == [epoch0[8:10]]  # a short last step
    assert step_microbatches(4, n, batch, accum, seed=1) == step_microbatches(4, n, batch, accum, seed=1)
    assert step_microbatches(0, n, batch, accum, seed=2) != step_microbatches(0, n, batch, accum, seed=1)


# ------------------------------------------------------------------------------------------------- schedule


def test_warmup_then_cosine_schedule() -> None:
    # warmup 4, 14 steps, min_lr = 0.1 * lr
    values = [lr_factor(s, 4, 14, 0.1) for s in range(14)]
    assert values[:5] == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])
    assert values[9] == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the decay
    assert values[13] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(0.9 * torch.pi)).item()))
    assert all(a >= b for a, b in zip(values[3:], values[4:]))
    assert lr_factor(0, 0, 10, 0.0) == 1.0


def test_warmup_then_linear_schedule() -> None:
    values = [lr_factor(s, 2, 12, 0.0, "linear") for s in range(12)]
    assert values == pytest.approx([0.5, 1.0, 1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])


# ------------------------------------------------------------------------------------------------- training


def test_tiny_model_from_init_learns_saves_and_reloads(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path, warmup_steps=3, min_lr=1e-3)
    summary, events = train(spec)
    steps = progress(events)
    assert [e["step"] for e in steps] == list(range(1, 13))
    assert all(e["total_steps"] == 12 and e["grad_norm"] > 0 and e["tokens_per_s"] > 0 for e in steps)
    # The scheduler drives the optimizer's lr exactly as lr_factor says.
    assert [e["lr"] for e in steps] == pytest.approx([1e-2 * lr_factor(s, 3, 12, 0.1) for s in range(12)])
    first, last = steps[0]["loss"], steps[-1]["loss"]
    assert last < 0.6 * first, (first, last)
    assert summary["final_loss"] == last and summary["steps"] == 12 and summary["seconds"] > 0
    assert events[-1]["type"] == "done" and events[-1]["final_dir"] == summary["final_dir"]
    assert summary["parameters"] == summary["trainable_parameters"] > 0

    final = Path(summary["final_dir"])
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in final.iterdir()}
    model, tok = load_model(final, placement=choose_placement("cpu"))
    assert tok("12+3=")["input_ids"] == char_tokenizer(tmp_path)("12+3=")["input_ids"]
    assert model.config.eos_token_id == tok.eos_token_id

    # Re-running a finished job returns its summary without training again.
    again, events_after = train(spec)
    assert again == summary
    assert len(progress(events_after)) == 12 and events_after[-1]["type"] == "done"


PIECE_PATTERN = r"\n|    | ?[A-Za-z_]+| ?[0-9]| ?[^A-Za-z_0-9\s]| "


def test_piece_tokenizer_keeps_identifiers_whole_and_round_trips(tmp_path: Path) -> None:
    pieces = ["\n", "    ", "def", " f", "(", "x", ")", ":", "return", " offset", ",", "3", " =", " x"]
    build_piece_tokenizer(pieces, PIECE_PATTERN, tmp_path / "tok")
    tok = load_tokenizer(tmp_path / "tok")
    text = "def f(x):\n    return offset(x,3)\n"
    ids = tok(text)["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.convert_ids_to_tokens(ids[1:]) == ["def", " f", "(", "x", ")", ":", "\n", "    ", "return", " offset", "(",
                                                  "x", ",", "3", ")", "\n"]
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok("return shift")["input_ids"][-1] == tok.unk_token_id  # unknown pieces map to <unk>


def test_train_from_init_with_a_piece_tokenizer(tmp_path: Path) -> None:
    data = tmp_path / "code.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"def f(x):\n", "completion": f"    return offset(x,{k})\n"}) + "\n"
                            for k in "0123456789"))
    pieces = ["\n", "    ", "def", " f", "(", "x", ")", ":", "return", " offset", ","] + list("0123456789")
    spec = tiny_spec(tmp_path, init={"config": dict(TINY_CONFIG), "tokenizer": {"kind": "pieces", "pieces": pieces,
                                                                                 "pattern": PIECE_PATTERN}},
                     data=str(data))
    summary, _ = train(spec)
    _, tok = load_model(summary["final_dir"], placement=choose_placement("cpu"))
    assert len(tok) == 4 + len(pieces)
    assert tok.decode(tok("    return offset(x,7)\n")["input_ids"], skip_special_tokens=True) == "    return offset(x,7)\n"
    with pytest.raises(ValueError, match="init.tokenizer.pattern"):
        validate_spec(tiny_spec(tmp_path, init={"config": dict(TINY_CONFIG), "tokenizer": {"kind": "pieces", "pieces": pieces}}))


def test_freeze_embeddings_keeps_the_tied_embedding_and_trains_the_rest(tmp_path: Path) -> None:
    summary, _ = train(tiny_spec(tmp_path, "frozen", freeze_embeddings=True, max_steps=3))
    initial = build_model_from_config(config_for_tokenizer(TINY_CONFIG, char_tokenizer(tmp_path)), seed=0)
    trained = load_file(str(Path(summary["final_dir"]) / "model.safetensors"))
    before = dict(initial.named_parameters())
    emb = "model.embed_tokens.weight"
    assert torch.equal(trained[emb], before[emb].detach())
    moved = [n for n, p in before.items() if n != emb and not torch.equal(trained[n], p.detach())]
    assert len(moved) == len(before) - 1, "every other parameter trained"
    assert summary["trainable_parameters"] == summary["parameters"] - before[emb].numel()


def test_gradient_accumulation_reports_the_mean_over_the_step(tmp_path: Path) -> None:
    # 16 examples per step either way, so the data order is the same and only the micro-batching differs.
    _, whole = train(tiny_spec(tmp_path, "whole", max_steps=1, batch_size=16))
    _, split = train(tiny_spec(tmp_path, "split", max_steps=1, batch_size=4, grad_accum=4))
    assert progress(split)[0]["loss"] == pytest.approx(progress(whole)[0]["loss"], rel=1e-6)
    assert progress(split)[0]["grad_norm"] == pytest.approx(progress(whole)[0]["grad_norm"], rel=1e-5)


def test_bf16_autocast_keeps_fp32_master_weights(tmp_path: Path) -> None:
    # The CUDA path (autocast to bf16) exercised on the CPU: compute in bf16, weights and saved model in fp32.
    summary, events = train(tiny_spec(tmp_path, max_steps=4, dtype="bfloat16"))
    losses = [e["loss"] for e in progress(events)]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert {t.dtype for t in load_file(str(Path(summary["final_dir"]) / "model.safetensors")).values()} == {torch.float32}
    with pytest.raises(ValueError, match="float16 training"):
        run_job(tiny_spec(tmp_path, "fp16", dtype="float16"))


def test_lora_trains_only_the_adapter_and_merges_faithfully(tmp_path: Path) -> None:
    tok = load_tokenizer(make_tiny_model(tmp_path / "base", seed=3, alphabet=ALPHABET, config=TINY_CONFIG))
    base_weights = load_file(str(tmp_path / "base" / "model.safetensors"))
    lora = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    spec = tiny_spec(tmp_path, init=None, model=str(tmp_path / "base"), lora=lora, lr=2e-2, max_steps=6, checkpoint_every=3)
    summary, events = train(spec)
    assert progress(events)[-1]["loss"] < progress(events)[0]["loss"]
    assert summary["parameters"] == sum(t.numel() for t in base_weights.values())
    assert 0 < summary["trainable_parameters"] < summary["parameters"] / 5

    # Checkpoints and the adapter folder hold the adapter only.
    [ckpt] = list_checkpoints(Path(spec["output_dir"]) / "checkpoints")
    assert ckpt.name == "step-3"
    assert all("lora_" in name for name in load_file(str(ckpt / "trainable.safetensors")))
    adapter = Path(summary["adapter_dir"])
    adapter_weights = load_file(str(adapter / "adapter_model.safetensors"))
    assert adapter_weights and all("lora_" in name for name in adapter_weights)
    assert any("lora_B" in n and t.abs().sum() > 0 for n, t in adapter_weights.items())  # B starts at 0

    # The merged model differs from the base only in the targeted projections.
    merged = load_file(str(Path(summary["final_dir"]) / "model.safetensors"))
    assert merged.keys() == base_weights.keys()
    for name, tensor in merged.items():
        if "q_proj" in name or "v_proj" in name:
            assert not torch.equal(tensor, base_weights[name]), name
        else:
            assert torch.equal(tensor, base_weights[name]), name

    # ... and computes what the PEFT model (base + adapter) computes.
    cpu = choose_placement("cpu")
    peft_model, _ = load_model(tmp_path / "base", adapter=adapter, placement=cpu)
    merged_model, _ = load_model(summary["final_dir"], placement=cpu)
    ids = torch.tensor([tok("12+34=46;")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(merged_model(ids).logits, peft_model(ids).logits, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------- exact resume

KILLER = """
import os, signal, sys
from distillery_engine.jobs import load_job, run_job

kill_at = int(sys.argv[2])

def sink(event):
    # Die hard, mid-run, right after step `kill_at` (a step past the last checkpoint).
    if event["type"] == "progress" and event["step"] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

run_job(load_job(sys.argv[1]), sink=sink)
"""


def test_killed_run_resumes_to_bit_identical_weights(tmp_path: Path) -> None:
    # Dropout makes the RNG state matter; grad_accum and several epochs exercise the data position.
    config = {**TINY_CONFIG, "attention_dropout": 0.2}
    common = dict(init={"config": config, "tokenizer": {"kind": "char", "alphabet": ALPHABET}},
                  batch_size=4, grad_accum=2, max_steps=None, epochs=3, warmup_steps=2, checkpoint_every=3, weight_decay=0.1)
    sums_data(tmp_path / "sums.jsonl", n=20)  # 3 steps per epoch, the last one short: 9 steps
    reference_summary, reference_events = train(tiny_spec(tmp_path, "reference", **common))
    assert reference_summary["steps"] == 9

    spec = tiny_spec(tmp_path, "resumed", **common)
    out = Path(spec["output_dir"])
    job = tmp_path / "job.json"
    job.write_text(json.dumps(spec))
    # Subprocesses run single-threaded like this process (conftest), so float reductions happen in the same order.
    killed = subprocess.run([sys.executable, "-c", KILLER, str(job), "7"], env=engine_env(), cwd=ENGINE_DIR,
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step-3", "step-6"]  # newest two
    assert not (out / "final").exists()
    # A half-written checkpoint left by a crash must be ignored (and cleaned up).
    (out / "checkpoints" / ".tmp-step-9-crashed").mkdir()

    rerun = subprocess.run([sys.executable, "-m", "distillery_engine.jobs", str(job)], env=engine_env(),
                           cwd=ENGINE_DIR, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    events = read_events(out)
    summary = {k: v for k, v in events[-1].items() if k not in ("time", "type")}
    resumed = [e for e in events if e["type"] == "log" and e["message"].startswith("resumed from")]
    assert len(resumed) == 1 and resumed[0]["step"] == 6
    after = progress(events)[7:]  # the killed attempt logged steps 1..7
    assert [e["step"] for e in after] == [7, 8, 9]
    assert [e["loss"] for e in after] == [e["loss"] for e in progress(reference_events)[6:]]
    assert summary["final_loss"] == reference_summary["final_loss"]
    assert not (out / "checkpoints" / ".tmp-step-9-crashed").exists()

    a = load_file(str(Path(reference_summary["final_dir"]) / "model.safetensors"))
    b = load_file(str(Path(summary["final_dir"]) / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_resume_refuses_a_changed_spec(tmp_path: Path) -> None:
    spec = tiny_spec(tmp_path, max_steps=2)
    train(spec)
    with pytest.raises(ValueError, match=r"different training run \(differs in: lr\)"):
        train({**spec, "lr": 1e-3})


# ------------------------------------------------------------------------------------------------- stories260k

STORY_ROWS = [
    {"prompt": "Once upon a time", "completion": ", there was a little cat named Tom. Tom liked to play with a red ball."},
    {"prompt": "One day", "completion": ", Lily went to the park with her mom. She saw a big dog and said hello."},
    {"prompt": "Tom was sad", "completion": " because his toy was broken. His dad fixed it and Tom was happy again."},
    {"prompt": "The sun was hot", "completion": ". Ben and Sue ate ice cream under a tree and laughed all day."},
]


def test_stories260k_completion_tokens_continue_the_prompt(stories_dir: Path) -> None:
    tok = load_tokenizer(stories_dir)
    # SentencePiece would encode ", there" alone with a spurious leading '▁'; the continuation must not.
    prompt, completion = "Once upon a time", ", there was"
    assert tok(prompt)["input_ids"] + encode_continuation(tok, completion) == tok(prompt + completion)["input_ids"]
    assert encode_continuation(tok, " there was") == tok("there was", add_special_tokens=False)["input_ids"]


def test_stories260k_sft_lowers_the_loss(stories_dir: Path, tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "stories.jsonl", STORY_ROWS)
    spec = {"type": "train", "output_dir": str(tmp_path / "sft"), "model": str(stories_dir), "data": str(data),
            "lr": 2e-3, "max_steps": 6, "batch_size": 4, "checkpoint_every": None}
    summary, _ = train(spec)

    tok = load_tokenizer(stories_dir)
    batch = collate(tokenize_examples(tok, load_examples(data)).examples, tok.pad_token_id)
    cpu = choose_placement("cpu")
    tokens = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())

    def mean_loss(path: Path | str) -> float:
        model, _ = load_model(path, placement=cpu)
        with torch.no_grad():
            return token_loss_sum(model, batch, cpu).item() / tokens

    before, after = mean_loss(stories_dir), mean_loss(summary["final_dir"])
    assert after < before - 0.2, (before, after)


def test_stories260k_save_and_reload_is_bit_exact(stories_dir: Path, tmp_path: Path) -> None:
    cpu = choose_placement("cpu")
    model, tok = load_model(stories_dir, placement=cpu, for_training=True)
    batch = collate(tokenize_examples(tok, [Example(r["prompt"], r["completion"], 1) for r in STORY_ROWS]).examples,
                    tok.pad_token_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(2):  # move the weights off the file's values, tied embeddings included
        optimizer.zero_grad()
        token_loss_sum(model, batch, cpu).backward()
        optimizer.step()
    save_model(model, tok, tmp_path / "saved")
    reloaded, _ = load_model(tmp_path / "saved", placement=cpu)
    model.eval()
    original, copy = model.state_dict(), reloaded.state_dict()
    assert original.keys() == copy.keys()
    for name in original:
        assert copy[name].dtype == original[name].dtype and torch.equal(copy[name], original[name]), name
    with torch.no_grad():
        assert torch.equal(model(batch["input_ids"]).logits, reloaded(batch["input_ids"]).logits)


# ------------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"bogus": 1}, r"unknown keys \['bogus'\]"),
        ({"data": "/nonexistent/data.jsonl"}, "data file not found"),
        ({"model": "<a model folder>"}, "exactly one of 'model'"),  # model and init both given
        ({"init": None}, "exactly one of 'model'"),  # neither
        ({"init": {"config": {}, "tokenizer": {"kind": "bpe"}}}, "init.tokenizer must be"),
        ({"max_steps": None}, "exactly one of 'max_steps' and 'epochs'"),
        ({"epochs": 2}, "exactly one of 'max_steps' and 'epochs'"),
        ({"max_steps": 0}, "max_steps must be an integer >= 1"),
        ({"batch_size": True}, "batch_size must be an integer"),
        ({"lr": 0}, "lr must be a number > 0"),
        ({"lr": float("nan")}, "lr must be a number"),
        ({"min_lr": 1.0}, "min_lr .* must not exceed lr"),
        ({"betas": [0.9]}, "betas must be two numbers"),
        ({"loss_on": "prompt"}, "loss_on must be"),
        ({"freeze_embeddings": 1}, "freeze_embeddings must be true or false"),
        ({"max_grad_norm": -1}, "max_grad_norm must be a number > 0, got -1"),
        ({"lora": {"r": 4, "rank": 4}}, r"unknown lora keys \['rank'\]"),
        ({"lora": {"target_modules": []}}, "target_modules must be"),
        ({"type": "sample"}, "type must be 'train'"),
        ({"output_dir": None}, r"missing required keys \['output_dir'\]"),
    ],
)
def test_spec_validation(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    spec = tiny_spec(tmp_path)
    if "model" in change:
        (tmp_path / "model").mkdir()
        (tmp_path / "model" / "config.json").write_text("{}")
        change = {"model": str(tmp_path / "model")}
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        validate_spec({**spec, **change})
    validate_spec(spec)  # the unchanged spec is fine


def test_loss_on_label_positions_only_equals_the_full_logits_loss():
    # The output layer runs only where some row has a label; the loss must equal the plain full-logits one,
    # for a model and for the same model wrapped by PEFT (which forwards logits_to_keep).
    import torch.nn.functional as F
    from peft import LoraConfig, get_peft_model

    from distillery_engine.models import build_model_from_config, choose_placement
    from distillery_engine.train import _accepts_logits_to_keep, token_loss_sum

    cfg = {"model_type": "qwen3", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 300}
    model = build_model_from_config(cfg, seed=0)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 300, (3, 12), generator=gen)
    attention = torch.ones_like(ids)
    attention[2, 9:] = 0
    labels = ids.clone()
    labels[0, :4] = labels[1, :6] = labels[2, :3] = -100
    labels[2, 9:] = -100
    batch = {"input_ids": ids, "attention_mask": attention, "labels": labels}
    logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits[:, :-1]
    shifted = labels[:, 1:]
    keep = shifted != -100
    expected = F.cross_entropy(logits[keep].float(), shifted[keep], reduction="sum")
    placement = choose_placement("cpu")
    for m in (model, get_peft_model(model, LoraConfig(r=4, target_modules="all-linear"))):
        assert _accepts_logits_to_keep(m)
        torch.testing.assert_close(token_loss_sum(m, batch, placement), expected, rtol=1e-6, atol=1e-5)
