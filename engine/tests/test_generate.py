"""The sampler (generate.py) and scorer (score.py): golden output, equivalence with a plain forward, seeds."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import STORIES_GOLDEN, STORIES_GOLDEN_TOKENS, STORIES_PROMPT, STORIES_PROMPT_IDS

from distillery_engine.generate import (
    SamplingParams,
    encode_prompts,
    eos_token_ids,
    filter_logits,
    generate,
    iter_generate,
    row_generator,
    sample_tokens,
)
from distillery_engine.score import score

TINY_PROMPTS = ["hello world", "a", "the quick brown fox jumps", "zz", "on a hill, far away"]
STORIES_PROMPTS = [
    "Tom had a dog",
    STORIES_PROMPT,
    "The sun was shining and the birds were singing in the tall green trees near the",
    "Hi",
]


def greedy(**overrides) -> SamplingParams:
    return SamplingParams(**{"temperature": 0.0, "max_tokens": 24, **overrides})


def texts(completions) -> list[str]:
    return [c.text for c in completions]


# ------------------------------------------------------------------------------------------ golden output


def test_stories_prompt_encodes_with_bos(stories):
    _, tokenizer = stories
    assert encode_prompts(tokenizer, [STORIES_PROMPT]) == [STORIES_PROMPT_IDS]


def test_stories_golden_greedy_batch_of_one(stories):
    model, tokenizer = stories
    [c] = generate(model, tokenizer, [STORIES_PROMPT], greedy(max_tokens=STORIES_GOLDEN_TOKENS))
    assert c.text == STORIES_GOLDEN
    assert len(c.token_ids) == STORIES_GOLDEN_TOKENS
    assert c.finish_reason == "length"


def test_stories_golden_greedy_in_padded_batch(stories):
    """Left padding and shared batches must not change greedy output: every row equals its solo run."""
    model, tokenizer = stories
    params = greedy(max_tokens=STORIES_GOLDEN_TOKENS, batch_size=len(STORIES_PROMPTS))
    batched = generate(model, tokenizer, STORIES_PROMPTS, params)
    assert batched[1].text == STORIES_GOLDEN
    for prompt, completion in zip(STORIES_PROMPTS, batched):
        [solo] = generate(model, tokenizer, [prompt], params)
        assert completion.token_ids == solo.token_ids, prompt


def test_stories_multi_token_stop_string(stories):
    model, tokenizer = stories
    [c] = generate(model, tokenizer, [STORIES_PROMPT], greedy(max_tokens=100, stop=["xyz", " girl named"]))
    assert c.finish_reason == "stop"
    assert c.text == ", there was a little"
    # The tokens up to and including the one that completed the stop: ... "▁g", "ir", "l", "▁named".
    assert tokenizer.decode(c.token_ids) == ", there was a little girl named"


def test_stories_late_stop_string_found_through_the_tail_window(stories):
    # "ball" ends about 45 tokens into the golden text, past the finisher's tail window (4 × 4 + 8 tokens),
    # so it is found by the windowed pre-check, and cut exactly where the whole text has it.
    model, tokenizer = stories
    [c] = generate(model, tokenizer, [STORIES_PROMPT], greedy(max_tokens=STORIES_GOLDEN_TOKENS, stop=["ball"]))
    assert c.finish_reason == "stop"
    assert c.text == STORIES_GOLDEN[: STORIES_GOLDEN.index("ball")]
    assert len(c.token_ids) > 4 * len("ball") + 8


def test_stories_score_of_greedy_tokens_is_the_max_logprob(stories):
    """Each greedy token is the argmax, so its score must be the maximum log-prob at that position."""
    model, tokenizer = stories
    [c] = generate(model, tokenizer, [STORIES_PROMPT], greedy(max_tokens=20))
    [s] = score(model, tokenizer, [(STORIES_PROMPT, c.token_ids)])
    with torch.no_grad():
        logits = model(torch.tensor([STORIES_PROMPT_IDS + c.token_ids])).logits[0].log_softmax(-1)
    best = logits[len(STORIES_PROMPT_IDS) - 1 : -1].max(-1).values.tolist()
    assert s.token_logprobs == pytest.approx(best, abs=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_stories_on_cuda(stories_dir):
    from distillery_engine.models import choose_placement, load_model

    model, tokenizer = load_model(stories_dir, placement=choose_placement("cuda", "float32"))
    batched = generate(model, tokenizer, STORIES_PROMPTS, greedy(max_tokens=STORIES_GOLDEN_TOKENS, batch_size=4))
    assert batched[1].text == STORIES_GOLDEN
    model, tokenizer = load_model(stories_dir, placement=choose_placement("cuda", "bfloat16"))
    params = SamplingParams(n=2, seed=1, max_tokens=32, batch_size=3)
    first = generate(model, tokenizer, STORIES_PROMPTS, params)
    assert texts(first) == texts(generate(model, tokenizer, STORIES_PROMPTS, params))


# ------------------------------------------------------------------------------------------ greedy vs forward


def reference_greedy(model, prompt_ids: list[int], steps: int) -> list[int]:
    """Argmax of a full forward over the whole sequence, recomputed at every step: no cache, no padding."""
    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt_ids) :]


@pytest.mark.parametrize("which", ["tiny", "tiny_qwen", "tiny_gpt2"])
def test_greedy_equals_step_by_step_argmax(which, request):
    model, tokenizer = request.getfixturevalue(which)
    params = greedy(max_tokens=20, batch_size=3)
    completions = generate(model, tokenizer, TINY_PROMPTS, params)
    eos = set(eos_token_ids(model, tokenizer))
    for prompt_ids, c in zip(encode_prompts(tokenizer, TINY_PROMPTS), completions):
        expected = reference_greedy(model, prompt_ids, len(c.token_ids))
        assert c.token_ids == expected
        if c.finish_reason == "eos":
            assert c.token_ids[-1] in eos
        else:
            assert c.finish_reason == "length" and len(c.token_ids) == 20


def test_results_come_back_in_prompt_order(tiny):
    model, tokenizer = tiny
    completions = generate(model, tokenizer, TINY_PROMPTS, SamplingParams(n=2, max_tokens=5, batch_size=3))
    assert [(c.prompt_index, c.sample_index) for c in completions] == [(p, s) for p in range(5) for s in range(2)]


# ------------------------------------------------------------------------------------------ seeds


def test_seeded_sampling_is_reproducible_and_batch_size_independent(tiny):
    model, tokenizer = tiny
    base = SamplingParams(n=3, temperature=1.0, top_p=0.95, seed=7, max_tokens=16)
    runs = [generate(model, tokenizer, TINY_PROMPTS, SamplingParams(**{**vars(base), "batch_size": b})) for b in (1, 4, 15)]
    assert texts(runs[0]) == texts(runs[1]) == texts(runs[2])
    assert [c.token_ids for c in runs[0]] == [c.token_ids for c in runs[2]]
    again = generate(model, tokenizer, TINY_PROMPTS, base)
    assert texts(again) == texts(runs[0])
    # Different samples of one prompt, and a different seed, give different text.
    assert len({c.text for c in runs[0] if c.prompt_index == 0}) > 1
    other = generate(model, tokenizer, TINY_PROMPTS, SamplingParams(**{**vars(base), "seed": 8}))
    assert texts(other) != texts(runs[0])


def test_skipped_pairs_do_not_change_the_others(tiny):
    model, tokenizer = tiny
    params = SamplingParams(n=2, seed=3, max_tokens=10, batch_size=4)
    full = {(c.prompt_index, c.sample_index): c for b in iter_generate(model, tokenizer, TINY_PROMPTS, params) for c in b}
    skip = {(0, 0), (2, 1), (4, 0), (4, 1)}
    rest = [c for b in iter_generate(model, tokenizer, TINY_PROMPTS, params, skip=skip) for c in b]
    assert {(c.prompt_index, c.sample_index) for c in rest} == set(full) - skip
    for c in rest:
        assert c == full[(c.prompt_index, c.sample_index)]


def test_top_k_one_equals_greedy(tiny):
    model, tokenizer = tiny
    greedy_out = generate(model, tokenizer, TINY_PROMPTS, greedy(max_tokens=16))
    top1 = generate(model, tokenizer, TINY_PROMPTS, SamplingParams(temperature=1.5, top_k=1, seed=5, max_tokens=16))
    assert [c.token_ids for c in top1] == [c.token_ids for c in greedy_out]


# ------------------------------------------------------------------------------------------ filters


def kept(logits: torch.Tensor) -> list[list[int]]:
    return [torch.nonzero(torch.isfinite(row)).flatten().tolist() for row in logits]


def test_filters_on_a_hand_made_distribution():
    # Probabilities 0.5, 0.25, 0.15, 0.06, 0.04, in a shuffled order to catch index mix-ups.
    probs = torch.tensor([[0.06, 0.25, 0.04, 0.5, 0.15]])
    logits = probs.log()
    assert kept(filter_logits(logits, top_k=2)) == [[1, 3]]
    assert kept(filter_logits(logits, top_k=0)) == [[0, 1, 2, 3, 4]]
    # top-p: the smallest set of most likely tokens whose mass reaches p.
    assert kept(filter_logits(logits, top_p=0.7)) == [[1, 3]]  # 0.5 + 0.25 = 0.75 >= 0.7
    assert kept(filter_logits(logits, top_p=0.76)) == [[1, 3, 4]]  # needs 0.15 too
    assert kept(filter_logits(logits, top_p=0.3)) == [[3]]  # the top token alone
    # min-p: probability at least min_p times the top one (0.5).
    assert kept(filter_logits(logits, min_p=0.35)) == [[1, 3]]  # threshold 0.175
    assert kept(filter_logits(logits, min_p=0.1)) == [[0, 1, 3, 4]]  # threshold 0.05
    # Order: top-k first, then top-p on the renormalised survivors (0.667, 0.333) keeps only the top token.
    assert kept(filter_logits(logits, top_k=2, top_p=0.6)) == [[3]]
    # (top-p first would have kept two: 0.5 < 0.6.)
    assert kept(filter_logits(logits, top_p=0.6)) == [[1, 3]]
    # Rows are filtered independently.
    two = torch.cat([logits, logits.flip(-1)])
    assert kept(filter_logits(two, top_k=1)) == [[3], [1]]


def test_inverse_cdf_sampling_matches_the_distribution():
    rows = 4000
    probs = torch.tensor([0.5, 0.3, 0.2, 0.0])
    logits = probs.log().expand(rows, -1)
    tokens = sample_tokens(logits, [row_generator(0, i, 0) for i in range(rows)])
    freq = torch.bincount(tokens, minlength=4).double() / rows
    assert freq[3] == 0  # masked tokens are never drawn
    assert freq[:3].tolist() == pytest.approx([0.5, 0.3, 0.2], abs=0.03)
    # Same generators → same draws.
    again = sample_tokens(logits, [row_generator(0, i, 0) for i in range(rows)])
    assert torch.equal(tokens, again)


# ------------------------------------------------------------------------------------------ endings


def test_stop_strings_cut_text_and_drop_rows(tiny):
    model, tokenizer = tiny
    full = generate(model, tokenizer, TINY_PROMPTS, greedy(max_tokens=30))
    # A three-character stop (three tokens for a char tokenizer) taken from the middle of row 0's output.
    stop = full[0].text[8:11]
    assert len(stop) == 3
    stopped = generate(model, tokenizer, TINY_PROMPTS, greedy(max_tokens=30, stop=[stop], batch_size=5))
    for before, after in zip(full, stopped):
        cut = before.text.find(stop)
        if cut < 0:
            assert after == before  # rows that never stop are unaffected by the others leaving the batch
        else:
            assert after.finish_reason == "stop"
            assert after.text == before.text[:cut]
            assert after.token_ids == before.token_ids[: cut + len(stop)]
    assert stopped[0].finish_reason == "stop"


def test_max_tokens(tiny):
    model, tokenizer = tiny
    for c in generate(model, tokenizer, TINY_PROMPTS, SamplingParams(max_tokens=7, seed=1)):
        assert c.finish_reason in ("length", "eos")
        if c.finish_reason == "length":
            assert len(c.token_ids) == 7
        else:
            assert len(c.token_ids) <= 7


def test_eos_from_generation_config_ends_completion(tiny, monkeypatch):
    model, tokenizer = tiny
    [full] = generate(model, tokenizer, [TINY_PROMPTS[0]], greedy(max_tokens=30))
    # The first character, after a few, that has not appeared before: declare it an EOS token.
    position = next(i for i in range(3, len(full.text)) if full.text[i] not in full.text[:i])
    eos_char = full.text[position]
    eos_id = tokenizer.convert_tokens_to_ids(eos_char)
    monkeypatch.setattr(model.generation_config, "eos_token_id", [2, eos_id])
    assert set(eos_token_ids(model, tokenizer)) == {2, eos_id}
    [c] = generate(model, tokenizer, [TINY_PROMPTS[0]], greedy(max_tokens=30))
    assert c.finish_reason == "eos"
    assert c.token_ids == full.token_ids[: position + 1]  # the EOS token is reported ...
    assert c.text == full.text[:position]  # ... but is not part of the text


def test_context_length_caps_generation(tiny):
    model, tokenizer = tiny
    context = model.config.max_position_embeddings
    prompt = "ab" * ((context - 5) // 2)  # BOS + prompt leaves a few positions
    prompt_len = len(encode_prompts(tokenizer, [prompt])[0])
    [c] = generate(model, tokenizer, [prompt], greedy(max_tokens=50))
    assert c.finish_reason in ("length", "eos")
    assert prompt_len + len(c.token_ids) <= context
    with pytest.raises(ValueError, match="context"):
        generate(model, tokenizer, ["a" * context], greedy())


# ------------------------------------------------------------------------------------------ chat template


def test_chat_template_missing_is_a_clear_error(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="no chat template"):
        generate(model, tokenizer, ["hi"], greedy(chat_template=True))


def test_chat_template_wraps_a_user_message(tiny, monkeypatch):
    model, tokenizer = tiny
    template = (
        "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    monkeypatch.setattr(tokenizer, "chat_template", template, raising=False)
    [ids] = encode_prompts(tokenizer, ["hi"], chat_template=True)
    assert ids == [1] + tokenizer("user: hi\nassistant: ", add_special_tokens=False)["input_ids"]
    [c] = generate(model, tokenizer, ["hi"], greedy(chat_template=True, max_tokens=5))
    assert c.token_ids == reference_greedy(model, ids, len(c.token_ids))


# ------------------------------------------------------------------------------------------ params


def test_sampling_params_validation():
    with pytest.raises(ValueError, match="unknown"):
        SamplingParams.from_dict({"temprature": 0.5})
    for bad in ({"temperature": -1}, {"top_p": 0}, {"top_k": -1}, {"min_p": 2}, {"n": 0}, {"max_tokens": 0},
                {"stop": "x"}, {"stop": [""]}, {"batch_size": True}, {"chat_template": 1}):
        with pytest.raises(ValueError):
            SamplingParams.from_dict(bad)
    assert SamplingParams.from_dict({"stop": ["a"]}).stop == ("a",)


# ------------------------------------------------------------------------------------------ score


def test_score_equals_log_softmax_of_a_direct_forward(tiny):
    model, tokenizer = tiny
    items = [("hello", " world"), ("a", "bcdefghij"), ("the quick brown fox", "!"), ("zz", ""), ("x", [5, 6, 7])]
    scores = score(model, tokenizer, items, batch_size=2)
    assert len(scores) == len(items)
    for (prompt, continuation), s in zip(items, scores):
        prompt_ids = tokenizer(prompt)["input_ids"]
        cont_ids = (
            list(continuation) if isinstance(continuation, list)
            else tokenizer(continuation, add_special_tokens=False)["input_ids"]
        )
        assert s.token_ids == cont_ids
        if not cont_ids:
            assert s.token_logprobs == [] and s.total_logprob == 0.0
            continue
        with torch.no_grad():
            logprobs = model(torch.tensor([prompt_ids + cont_ids])).logits[0].log_softmax(-1)
        expected = [float(logprobs[len(prompt_ids) - 1 + j, t]) for j, t in enumerate(cont_ids)]
        assert s.token_logprobs == pytest.approx(expected, abs=1e-5)
        assert s.total_logprob == pytest.approx(math.fsum(expected), abs=1e-4)


def test_score_rejects_out_of_range_ids(tiny):
    model, tokenizer = tiny
    with pytest.raises(ValueError, match="out of range"):
        score(model, tokenizer, [("a", [10_000])])
