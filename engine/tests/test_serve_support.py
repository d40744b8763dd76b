"""What `distillery serve` needs from the engine: one streamed completion with log-probs, and cancellation."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ENGINE_DIR, STORIES_GOLDEN, STORIES_GOLDEN_TOKENS, STORIES_PROMPT, STORIES_PROMPT_IDS, engine_env

from distillery_engine.generate import (
    Cancelled,
    IncrementalDecoder,
    SamplingParams,
    generate,
    held_back,
    stream_completion,
)
from distillery_engine.score import score


def greedy(**kw) -> SamplingParams:
    return SamplingParams(temperature=0.0, **kw)


def collect(model, tokenizer, prompt_ids, params, top=None):
    deltas: list[tuple[str, list]] = []
    result = stream_completion(
        model, tokenizer, prompt_ids, params, top_logprobs=top, on_delta=lambda t, e: deltas.append((t, e))
    )
    return result, deltas


def test_held_back():
    assert held_back("abc", []) == 0
    assert held_back("abc\n", ["\n\n"]) == 1
    assert held_back("abc", ["cde", "bcx"]) == 2
    assert held_back("abc", ["abcd"]) == 3
    assert held_back("abc", ["x"]) == 0


def test_stories_greedy_golden_streamed(stories):
    model, tokenizer = stories
    result, deltas = collect(model, tokenizer, STORIES_PROMPT_IDS, greedy(max_tokens=STORIES_GOLDEN_TOKENS))
    assert result.text == STORIES_GOLDEN
    assert "".join(t for t, _ in deltas) == STORIES_GOLDEN
    assert result.finish_reason == "length"
    assert result.completion_tokens == STORIES_GOLDEN_TOKENS
    assert result.prompt_tokens == len(STORIES_PROMPT_IDS)
    assert result.logprobs is None


def test_stories_logprobs_are_raw_and_consistent(stories):
    model, tokenizer = stories
    result, deltas = collect(model, tokenizer, STORIES_PROMPT_IDS, greedy(max_tokens=12), top=5)
    entries = result.logprobs
    assert entries is not None and len(entries) == 12
    assert [e for _, es in deltas for e in es] == entries
    assert "".join(e["token"] for e in entries) == result.text
    for e in entries:
        top = e["top"]
        assert len(top) == 5
        assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        # Greedy: the chosen token is the most likely one, and its entry is the first alternative.
        assert top[0]["token"] == e["token"] and top[0]["logprob"] == pytest.approx(e["logprob"])
        assert e["logprob"] <= 0
    # Each alternative's text is what it would have added after the text so far (leading spaces included).
    [c] = generate(model, tokenizer, [STORIES_PROMPT], greedy(max_tokens=12))
    for i, e in enumerate(entries):
        context = STORIES_PROMPT_IDS + c.token_ids[:i]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([context])).logits[0, -1].float()
        alt_ids = torch.topk(logits, 5).indices.tolist()
        before = tokenizer.decode(context, skip_special_tokens=True)
        for alt_id, alt in zip(alt_ids, e["top"]):
            assert alt["token"] == tokenizer.decode(context + [alt_id], skip_special_tokens=True)[len(before):]
    assert entries[1]["top"][1]["token"].startswith(" ")
    # The same numbers as the score method gives for the generated tokens.
    [s] = score(model, tokenizer, [(STORIES_PROMPT, c.token_ids)])
    for got, want in zip((e["logprob"] for e in entries), s.token_logprobs):
        assert got == pytest.approx(want, abs=1e-4)


def test_logprobs_ignore_temperature(stories):
    """Reported log-probs are the model's distribution, not the tempered one the sampler drew from."""
    model, tokenizer = stories
    hot, _ = collect(model, tokenizer, STORIES_PROMPT_IDS, SamplingParams(temperature=1.5, seed=3, max_tokens=8), top=0)
    ids = tokenizer(STORIES_PROMPT)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
    first = hot.logprobs[0]
    # The first token's log-prob under the untempered model.
    candidates = torch.log_softmax(logits, -1)
    assert any(math.isclose(first["logprob"], v, abs_tol=1e-4) for v in candidates.tolist())
    assert first["top"] == []


def test_seeded_sampling_matches_generate(stories):
    model, tokenizer = stories
    params = SamplingParams(temperature=1.0, seed=11, max_tokens=30)
    result, _ = collect(model, tokenizer, STORIES_PROMPT_IDS, params)
    [c] = generate(model, tokenizer, [STORIES_PROMPT], params)
    assert result.text == c.text
    again, _ = collect(model, tokenizer, STORIES_PROMPT_IDS, params)
    assert again.text == result.text
    other, _ = collect(model, tokenizer, STORIES_PROMPT_IDS, SamplingParams(temperature=1.0, seed=12, max_tokens=30))
    assert other.text != result.text


def test_stop_string_held_back_and_cut(stories):
    model, tokenizer = stories
    result, deltas = collect(model, tokenizer, STORIES_PROMPT_IDS, greedy(max_tokens=100, stop=[" girl named"]), top=2)
    assert result.finish_reason == "stop"
    assert result.text == ", there was a little"
    streamed = "".join(t for t, _ in deltas)
    assert streamed == result.text
    # Never sent: any part of the stop string (" g" was held back until " girl named" was complete).
    assert all(" g" not in t for t, _ in deltas)
    assert "".join(e["token"] for e in result.logprobs) == result.text


def test_stop_string_longer_than_text_prefix(stories):
    model, tokenizer = stories
    stop = STORIES_GOLDEN[: STORIES_GOLDEN.index("ball")] + "ball"
    result, deltas = collect(model, tokenizer, STORIES_PROMPT_IDS, greedy(max_tokens=STORIES_GOLDEN_TOKENS, stop=["xyz", stop]))
    assert result.finish_reason == "stop" and result.text == ""
    assert deltas == []


def test_eos_ends_with_stop_reason(tiny):
    model, tokenizer = tiny
    # Make EOS (id 2) the argmax at the first step: its output row aligned with the last hidden state.
    head = model.get_output_embeddings()
    saved = head.weight.data.clone()
    try:
        ids = tokenizer("hello")["input_ids"]
        with torch.no_grad():
            hidden = model.model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
        head.weight.data[2] = hidden / hidden.norm() * 1e3
        result, deltas = collect(model, tokenizer, ids, greedy(max_tokens=10), top=1)
    finally:
        head.weight.data.copy_(saved)
    assert result.finish_reason == "eos"
    assert result.text == "" and result.completion_tokens == 1
    assert result.logprobs == []


def test_incremental_decoder_holds_partial_characters(stories):
    _, tokenizer = stories
    text = "Lily saw a café — and 🐱."
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    decoder = IncrementalDecoder(tokenizer, [1])
    pieces = [decoder.push(t) for t in ids]
    pieces.append(decoder.flush())
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=True)
    assert all("\ufffd" not in p for p in pieces)


def test_cancelled_raises(stories):
    model, tokenizer = stories
    calls = {"n": 0}

    def cancelled() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Cancelled):
        stream_completion(model, tokenizer, STORIES_PROMPT_IDS, greedy(max_tokens=50), cancelled=cancelled)


def test_n_must_be_one(stories):
    model, tokenizer = stories
    with pytest.raises(ValueError, match="n must be 1"):
        stream_completion(model, tokenizer, STORIES_PROMPT_IDS, SamplingParams(n=2))


# ----------------------------------------------------------------------------------------------- through the worker


class Worker:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "distillery_engine.worker"],
            cwd=ENGINE_DIR, env=engine_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, encoding="utf-8",
        )

    def send(self, request_id, method, params) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"id": request_id, "method": method, "params": params}) + "\n")
        self.proc.stdin.flush()

    def read(self) -> dict:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the worker closed stdout"
        return json.loads(line)

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture()
def worker(stories_dir: Path):
    w = Worker()
    w.send(1, "load", {"model": str(stories_dir), "device": "cpu"})
    assert "result" in w.read()
    yield w
    w.close()


def test_worker_complete_streams_deltas(worker):
    worker.send(2, "complete", {"prompt": STORIES_PROMPT, "temperature": 0, "max_tokens": STORIES_GOLDEN_TOKENS,
                                "stream": True, "logprobs": 2})
    deltas = []
    while True:
        msg = worker.read()
        assert msg["id"] == 2
        if "event" in msg:
            assert msg["event"]["type"] == "delta"
            deltas.append(msg["event"])
            continue
        result = msg["result"]
        break
    assert result["text"] == STORIES_GOLDEN
    assert "".join(d["text"] for d in deltas) == STORIES_GOLDEN
    assert [e for d in deltas for e in d["logprobs"]] == result["logprobs"]
    assert result["prompt_tokens"] == len(STORIES_PROMPT_IDS)


def test_worker_complete_from_ids_and_errors(worker):
    worker.send(2, "complete", {"prompt_ids": STORIES_PROMPT_IDS, "temperature": 0, "max_tokens": 5})
    assert worker.read()["result"]["text"] == ", there was a little"
    worker.send(3, "complete", {"prompt_ids": [1, 99999]})
    assert "prompt_ids" in worker.read()["error"]["message"]
    worker.send(4, "complete", {"prompt": "x", "prompt_ids": [1]})
    assert "exactly one" in worker.read()["error"]["message"]
    worker.send(5, "complete", {"prompt": "x", "bogus": 1})
    assert "bogus" in worker.read()["error"]["message"]


def test_worker_cancel_stops_a_running_completion(worker):
    # 500 tokens take a while; the cancel line is read by the reader thread while the completion runs.
    worker.send(2, "complete", {"prompt": STORIES_PROMPT, "temperature": 1.0, "max_tokens": 400, "stream": True,
                                "cancel_key": "k1"})
    first = worker.read()
    assert first["id"] == 2 and "event" in first
    started = time.monotonic()
    worker.send(3, "cancel", {"key": "k1"})
    while True:
        msg = worker.read()
        if "event" in msg:
            continue
        break
    assert msg["id"] == 2 and msg["error"]["type"] == "Cancelled"
    assert worker.read() == {"id": 3, "result": {"ok": True}}
    assert time.monotonic() - started < 10
    # The worker keeps serving, and a stale key does not cancel later requests.
    worker.send(4, "complete", {"prompt": STORIES_PROMPT, "temperature": 0, "max_tokens": 5, "cancel_key": "k1"})
    assert worker.read()["result"]["text"] == ", there was a little"
