"""On-policy step benchmark: the engine's `onpolicy` job vs TRL's `SDFTTrainer`, one measurement per process.

Driven by bench/run.ts (`npm run bench`, workload `onpolicy`) and by bench/gpu-onpolicy. Each sub-command prints
exactly one line `BENCH_RESULT {json}` on stdout (everything else goes to stderr).

    python bench/bench_onpolicy.py prepare --model NAME --models bench/models.json --work DIR
        [--prompt-len 32 --context-len 64 --max-tokens 64 --prompts 64]
    python bench/bench_onpolicy.py step --work DIR --impl ours|trl [--batch 8 --max-tokens 64
        --warmup-steps 2 --steps 6 --lr 1e-5 --teacher frozen|ema --ema-rate 0.05]
    python bench/bench_onpolicy.py profile --work DIR [--batch 8 --max-tokens 64 --repeats 3]

The workload, identical on both sides (docs/benchmarks.md, "On-policy step", has the method):
- the same model folder (seeded init, `prepare`), fp32 on CPU, fp32 master weights + bf16 autocast on CUDA;
- `batch` prompts per optimizer step, 1 rollout per prompt, exactly `max_tokens` sampled tokens per rollout
  (temperature 1, no top-k/top-p). The model folder has EOS disabled (config, generation config and tokenizer),
  so the engine's sampler never stops early; TRL needs an EOS id for its completion mask, so its tokenizer gets
  `</s>` back and its `generate` gets `min_new_tokens = max_new_tokens`, which masks EOS out. Every step's
  completion lengths are checked on both sides;
- student prompt: BOS + random text; teacher prompt: the same text + "\\n\\n" + a random "demonstration"
  (TRL's default `teacher_prompt_template`, "{prompt}\\n\\n{privileged_context}"; the engine's record carries
  the same rendered text), so both sides tokenize to the same ids;
- loss: full-vocabulary forward KL(teacher || student) at every rollout position, mean per sequence then over
  the batch (engine: divergence forward_kl, estimator full, reduction sequence_mean; TRL:
  distillation_mode="full_logits", distillation_alpha=0.0, distillation_is_clip=None);
- teacher: the initial weights, frozen (engine `frozen`, TRL `teacher_model_kind="base"`) or an EMA of the
  student (engine `ema` with ema_every 1, TRL `ema` with teacher_sync_steps 1), same rate;
- AdamW (torch), betas 0.9/0.999, weight decay 0, grad clip 1.0, cosine lr to 0 without warmup, seed 0.

A step's duration is the time between two consecutive optimizer-step ends (CUDA: after a synchronize), so it
includes everything a step does; the rollout part is the sampling call (engine: the job's own
`rollout_seconds`; TRL: its `_generate`, timed by a wrapper), the rest is teacher forward, student
forward/backward, loss and optimizer. Peak memory is taken over the timed steps only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench.py, next to this file

from bench import (  # noqa: E402
    PeakMemory,
    StepClock,
    emit,
    environment,
    filler_chars,
    placement_of,
    process_peak_rss,
    random_text,
    read_jsonl,
    step_stats,
    trl_training_args,
    sync,
)
from distillery_engine.models import (  # noqa: E402
    build_char_tokenizer,
    build_model_from_config,
    count_parameters,
    load_tokenizer,
    save_model,
)

EOS_TOKEN = "</s>"  # build_char_tokenizer's EOS (id 2)


# ----------------------------------------------------------------------------------------------- prepare


def write_tokenizer_fast(spec: dict[str, Any], out_dir: Path) -> None:
    """The same tokenizer as bench.py's `write_tokenizer` (char, or char padded with filler characters to
    `vocab_size` ids), but the padded vocabulary is written into tokenizer.json directly: building a
    151,936-entry vocabulary through the `tokenizers` API takes minutes, this takes a second."""
    kind = spec.get("kind")
    distinct = list(dict.fromkeys(spec["alphabet"]))
    build_char_tokenizer("".join(distinct), out_dir)
    if kind == "char":
        return
    if kind != "char-padded":
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected char or char-padded")
    path = out_dir / "tokenizer.json"
    data = json.loads(path.read_text())
    vocab: dict[str, int] = data["model"]["vocab"]
    filler = spec["vocab_size"] - len(vocab)
    if filler < 0:
        raise ValueError("char-padded tokenizer: vocab_size is smaller than the alphabet")
    for ch in filler_chars(filler, set(vocab)):
        vocab[ch] = len(vocab)
    path.write_text(json.dumps(data, ensure_ascii=False))


def disable_eos_in_folder(model_dir: Path) -> None:
    """No EOS anywhere the engine looks (config, generation config, tokenizer): every rollout is max_tokens long."""
    for name, key in (("config.json", "eos_token_id"), ("generation_config.json", "eos_token_id"), ("tokenizer_config.json", "eos_token")):
        path = model_dir / name
        if path.is_file():
            data = json.loads(path.read_text())
            data[key] = None
            path.write_text(json.dumps(data, indent=2) + "\n")


def cmd_prepare(args: argparse.Namespace) -> None:
    models = json.loads(Path(args.models).read_text())
    if args.model not in models:
        raise SystemExit(f"unknown model {args.model!r}; {args.models} has {sorted(models)}")
    entry = models[args.model]
    work = Path(args.work)
    model_dir = work / "model"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-tok-") as tok_dir:
        write_tokenizer_fast(entry["tokenizer"], Path(tok_dir))
        tokenizer = load_tokenizer(tok_dir)
    config = dict(entry["config"])
    if config.setdefault("vocab_size", len(tokenizer)) < len(tokenizer):
        raise SystemExit(f"{args.model}: vocab_size {config['vocab_size']} < tokenizer size {len(tokenizer)}")
    config.setdefault("bos_token_id", tokenizer.bos_token_id)
    config.setdefault("eos_token_id", tokenizer.eos_token_id)
    config.setdefault("pad_token_id", tokenizer.pad_token_id)
    model = build_model_from_config(config, seed=args.seed)
    parameters = count_parameters(model)
    save_model(model, tokenizer, model_dir)
    del model
    disable_eos_in_folder(model_dir)
    tokenizer = load_tokenizer(model_dir)
    if tokenizer.eos_token is not None:
        raise SystemExit("could not disable EOS in the tokenizer")

    # Random text over the alphabet without the newline, which only appears in the teacher's "\n\n" separator.
    text_alphabet = entry["tokenizer"]["alphabet"].replace("\n", "")
    rng = random.Random(args.seed)
    rows = []
    for _ in range(args.prompts):
        prompt = random_text(rng, text_alphabet, args.prompt_len - 1)  # + BOS
        context = random_text(rng, text_alphabet, args.context_len)
        rows.append({"prompt": prompt, "context": context})
    with (work / "prompts.jsonl").open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    # The engine's records: the same rendered text TRL builds with its default teacher_prompt_template.
    with (work / "onpolicy.jsonl").open("w") as f:
        f.writelines(json.dumps({"student": r["prompt"], "teacher": teacher_text(r)}) + "\n" for r in rows)
    student_len = len(tokenizer(rows[0]["prompt"])["input_ids"])
    teacher_len = len(tokenizer(teacher_text(rows[0]))["input_ids"])
    if student_len != args.prompt_len:
        raise SystemExit(f"the student prompt is {student_len} tokens, expected {args.prompt_len}")
    context = config.get("max_position_embeddings")
    if context is not None and teacher_len + args.max_tokens > context:
        raise SystemExit(f"teacher prompt {teacher_len} + {args.max_tokens} tokens exceeds the model's {context} positions")
    meta = {
        "model": args.model,
        "description": entry.get("description", ""),
        "model_type": config.get("model_type", "llama"),
        "parameters": parameters,
        "vocab_size": config["vocab_size"],
        "tokenizer_size": len(tokenizer),
        "config": entry["config"],
        "student_prompt_tokens": student_len,
        "teacher_prompt_tokens": teacher_len,
        "prompts": args.prompts,
        "seed": args.seed,
        "prepare_seconds": time.perf_counter() - t0,
    }
    (work / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    emit(meta)


def teacher_text(row: dict[str, str]) -> str:
    return f"{row['prompt']}\n\n{row['context']}"  # TRL's default teacher_prompt_template


# ----------------------------------------------------------------------------------------------- one step run


def rss_now() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def cmd_step(args: argparse.Namespace) -> None:
    work = Path(args.work)
    meta = json.loads((work / "meta.json").read_text())
    placement = placement_of(args)
    device = placement.device
    if args.warmup_steps < 1 or args.steps < 1:
        raise SystemExit("--warmup-steps and --steps must be >= 1 (the first step has no start time of its own)")
    total_steps = args.warmup_steps + args.steps
    n_prompts = len(read_jsonl(work / "prompts.jsonl"))
    if n_prompts < args.batch:
        raise SystemExit(f"prompts.jsonl has {n_prompts} prompts; batch {args.batch} needs more")
    tokens_per_step = args.batch * args.max_tokens
    clock = StepClock(device, args.warmup_steps, total_steps)
    out_dir = Path(tempfile.mkdtemp(prefix=f"onpolicy-{args.impl}-", dir=work))
    rollout: list[float] = []
    lengths: list[list[int]] = []

    # Import what each side needs before the baseline, so the memory delta is the run's own.
    if args.impl == "ours":
        import distillery_engine.onpolicy  # noqa: F401
        from distillery_engine.jobs import run_job
    else:
        import datasets  # noqa: F401
        import trl  # noqa: F401
        from trl.experimental.sdft import SDFTTrainer  # noqa: F401
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    baseline = rss_now() if device.type != "cuda" else int(torch.cuda.memory_allocated(device))
    extra: dict[str, Any] = {}

    if args.impl == "ours":
        spec = {
            "type": "onpolicy", "output_dir": str(out_dir), "model": str(work / "model"),
            "data": str(work / "onpolicy.jsonl"), "max_prompt_len": 1 << 20, "max_teacher_prompt_len": 1 << 20,
            "sampling": {"n": 1, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0,
                         "max_tokens": args.max_tokens, "stop": [], "batch_size": args.batch},
            "loss": {"divergence": "forward_kl", "estimator": "full", "temperature": 1.0, "clip": None,
                     "skip_tokens": 0, "reduction": "sequence_mean"},
            "teacher": {"kind": args.teacher, "ema_rate": args.ema_rate, "ema_every": 1},
            "lmbda": 1.0, "lr": args.lr, "min_lr": 0.0, "warmup_steps": 0, "max_steps": total_steps,
            "batch_size": args.batch, "grad_accum": 1, "max_grad_norm": 1.0, "weight_decay": 0.0,
            "betas": [0.9, 0.999], "seed": 0, "checkpoint_every": None, "record_every": None,
            "device": args.device, "dtype": args.dtype,
        }

        def sink(event: dict[str, Any]) -> None:
            if event["type"] == "progress":  # emitted right after optimizer.step() and the EMA update
                clock.step_end()
                clock.losses.append(event["loss"])
                rollout.append(event["rollout_seconds"])
                lengths.append([int(event["completion_length"])] if event["tokens"] == tokens_per_step else [-1])

        run_job(spec, sink)
        extra["engine_spec"] = {k: v for k, v in spec.items() if k not in ("output_dir", "model", "data")}
    elif args.impl == "trl":
        extra = run_trl(args, work, out_dir, total_steps, clock, rollout, lengths, placement)
    else:
        raise SystemExit(f"unknown impl {args.impl!r}; expected ours or trl")
    clock.finish()

    if len(clock.times) != total_steps:
        raise SystemExit(f"{args.impl}: saw {len(clock.times)} step ends, expected {total_steps}")
    bad = [ls for ls in lengths if any(n != args.max_tokens for n in ls)]
    if len(lengths) != total_steps or bad:
        raise SystemExit(f"{args.impl}: rollouts were not all exactly {args.max_tokens} tokens: {bad[:3]}")
    stats = step_stats(clock.times, args.warmup_steps, tokens_per_step)
    timed_rollout = rollout[args.warmup_steps:]
    rollout_median = statistics.median(timed_rollout)
    step_median = stats["step_seconds_median"]
    peak = clock.memory.peak
    emit({
        "kind": "onpolicy", "impl": args.impl, "batch": args.batch, "max_tokens": args.max_tokens,
        "rollouts_per_prompt": 1, "teacher": args.teacher, "ema_rate": args.ema_rate if args.teacher == "ema" else None,
        "lr": args.lr, "student_prompt_tokens": meta["student_prompt_tokens"],
        "teacher_prompt_tokens": meta["teacher_prompt_tokens"],
        "autocast": str(placement.autocast_dtype).removeprefix("torch.") if placement.autocast_dtype else None,
        "loss_first": clock.losses[0] if clock.losses else None,
        "loss_last": clock.losses[-1] if clock.losses else None,
        **stats,
        "rollout_seconds_median": rollout_median,
        "rollout_seconds_all": timed_rollout,
        # The rest of the step: teacher forward, student forward/backward, loss, optimizer, bookkeeping.
        "train_seconds_median": statistics.median(
            [d - r for d, r in zip(stats["step_seconds_all"], timed_rollout)]),
        "rollout_share": rollout_median / step_median if step_median else None,
        "peak_memory_bytes": peak, "peak_memory_kind": PeakMemory.kind(device),
        "baseline_memory_bytes": baseline, "peak_memory_delta_bytes": peak - baseline,
        "process_peak_rss_bytes": process_peak_rss(), "loadavg_1m": clock.load, **extra, **environment(device),
    })


def run_trl(args: argparse.Namespace, work: Path, out_dir: Path, total_steps: int, clock: StepClock,
            rollout: list[float], lengths: list[list[int]], placement) -> dict[str, Any]:
    """The same workload through TRL's SDFTTrainer (HF `generate` for rollouts: use_vllm=False)."""
    import datasets
    import transformers
    import trl
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl.experimental.sdft import SDFTConfig, SDFTTrainer

    datasets.disable_progress_bars()
    model_dir = work / "model"
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    tokenizer = load_tokenizer(model_dir)
    # TRL cuts each completion after the first EOS id, so it needs one; min_new_tokens (below) keeps EOS from
    # ever being sampled, so every completion is exactly max_tokens long, as on the engine's side.
    tokenizer.eos_token = EOS_TOKEN
    rows = read_jsonl(work / "prompts.jsonl")
    dataset = datasets.Dataset.from_list([{"prompt": r["prompt"], "privileged_context": r["context"]} for r in rows])

    config = SDFTConfig(
        **trl_training_args(out_dir, args.batch, total_steps, args.lr, placement),
        num_generations=1,
        max_prompt_length=None,
        max_completion_length=args.max_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        generation_kwargs={"min_new_tokens": args.max_tokens},
        use_vllm=False,
        distillation_mode="full_logits",
        distillation_alpha=0.0,  # forward KL(teacher || student)
        distillation_is_clip=None,
        num_loss_tokens_to_skip=0,
        teacher_model_kind="base" if args.teacher == "frozen" else "ema",
        teacher_update_rate=args.ema_rate,
        teacher_sync_steps=1,
    )

    class StepTimer(TrainerCallback):
        def on_step_end(self, _args, state, control, **kwargs):  # after optimizer.step(), zero_grad(), EMA sync
            clock.step_end()

        def on_log(self, _args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                clock.losses.append(float(logs["loss"]))

    # Added after __init__, so it runs after TRL's EMA callback (added in __init__): the EMA update is inside
    # the timed step, as in the engine.
    trainer = SDFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    trainer.add_callback(StepTimer())
    generate = trainer._generate

    def timed_generate(prompt_ids):
        sync(placement.device)
        start = time.perf_counter()
        out = generate(prompt_ids)
        sync(placement.device)
        rollout.append(time.perf_counter() - start)
        lengths.append([len(c) for c in out[1]])
        return out

    trainer._generate = timed_generate
    # Same token layout as the engine: the teacher prompt is [student prompt ; "\n\n" ; context].
    first = rows[0]
    ids = trainer._tokenize_prompts([teacher_text(first)])[0]
    if len(ids) != json.loads((work / "meta.json").read_text())["teacher_prompt_tokens"]:
        raise SystemExit("TRL tokenized the teacher prompt differently")
    trainer.train()
    return {"trl": trl.__version__, "datasets": datasets.__version__, "transformers_trainer": transformers.__version__,
            "trl_distillation_mode": config.distillation_mode, "trl_teacher_model_kind": config.teacher_model_kind}


# ----------------------------------------------------------------------------------------------- profile


def cmd_profile(args: argparse.Namespace) -> None:
    """Where the engine's non-rollout step time goes, next to plain equivalents, in one process on the prepared
    model: teacher forward (no grad), student forward, loss, backward — the engine's own functions
    (`completion_logits`, `micro_loss`) against a plain forward + `log_softmax` + `F.kl_div(log_target=True)`
    (what TRL's full_logits / alpha=0 loss computes). Random token ids of the benchmark's shapes; medians of
    `--repeats` after one warm-up round."""
    import copy

    import torch.nn.functional as F

    from distillery_engine.models import load_model
    from distillery_engine.onpolicy import LossSpec, completion_logits, micro_loss, right_aligned

    work = Path(args.work)
    meta = json.loads((work / "meta.json").read_text())
    placement = placement_of(args)
    device = placement.device
    model, tokenizer = load_model(work / "model", placement=placement, for_training=True)
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    spec = LossSpec(kind="forward_kl", beta=0.5, temperature=1.0, estimator="full", topk=20, topk_support="teacher",
                    topk_tail=False, clip=None, skip_tokens=0, reduction="sequence_mean")
    b, n = args.batch, args.max_tokens
    g = torch.Generator().manual_seed(0)
    hi = min(len(tokenizer), meta["vocab_size"])

    def ids(length: int) -> list[list[int]]:
        return [torch.randint(4, hi, (length,), generator=g).tolist() for _ in range(b)]

    student, teacher_p, rollout = ids(meta["student_prompt_tokens"]), ids(meta["teacher_prompt_tokens"]), ids(n)
    pad = tokenizer.pad_token_id
    times: dict[str, list[float]] = {}

    def tick(name: str, start: float) -> float:
        sync(device)
        now = time.perf_counter()
        times.setdefault(name, []).append(now - start)
        return now

    from distillery_engine.train import autocast_context

    for r in range(args.repeats + 1):
        if r == 1:
            times.clear()
        sync(device)
        t = time.perf_counter()
        with torch.no_grad():
            t_logits, _ = completion_logits(teacher, teacher_p, rollout, pad, placement)
        t = tick("engine: teacher forward", t)
        s_logits, mask = completion_logits(model, student, rollout, pad, placement)
        t = tick("engine: student forward", t)
        parts = micro_loss(s_logits, t_logits, right_aligned(rollout, device), mask, spec, float(b))
        t = tick("engine: loss (micro_loss)", t)
        parts.loss.backward()
        t = tick("engine: backward", t)
        model.zero_grad(set_to_none=True)
        del s_logits, parts

        full = torch.tensor([p + c for p, c in zip(student, rollout)], device=device)
        t = time.perf_counter()
        with autocast_context(placement):
            logits = model(input_ids=full, attention_mask=torch.ones_like(full), use_cache=False,
                           logits_to_keep=n + 1).logits[:, :-1][:, -n:]
        t = tick("plain: student forward", t)
        per_token = F.kl_div(F.log_softmax(logits.float(), -1), F.log_softmax(t_logits.float(), -1),
                             reduction="none", log_target=True).sum(-1)
        loss = per_token.mean(-1).mean()
        t = tick("plain: loss (log_softmax + kl_div)", t)
        loss.backward()
        tick("plain: backward", t)
        model.zero_grad(set_to_none=True)
        del logits, per_token, loss, t_logits
    medians = {k: statistics.median(v) for k, v in times.items()}
    for k, v in medians.items():
        print(f"{k:36} {v:7.3f} s", file=sys.stderr)
    emit({"kind": "onpolicy-profile", "batch": b, "max_tokens": n, "seconds_median": medians, "seconds_all": times,
          "repeats": args.repeats, "loadavg_1m": os.getloadavg()[0], **environment(device)})


# ----------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench_onpolicy.py", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default=None, help="auto (default), float32, bfloat16")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare")
    p.add_argument("--model", required=True)
    p.add_argument("--models", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--prompt-len", type=int, default=32, help="student prompt tokens (BOS + characters)")
    p.add_argument("--context-len", type=int, default=64, help="characters of the teacher's demonstration")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)

    s = sub.add_parser("step")
    s.add_argument("--work", required=True)
    s.add_argument("--impl", required=True, choices=["ours", "trl"])
    s.add_argument("--batch", type=int, default=8, help="prompts per optimizer step (1 rollout each)")
    s.add_argument("--max-tokens", type=int, default=64, help="exact rollout length")
    s.add_argument("--warmup-steps", type=int, default=2)
    s.add_argument("--steps", type=int, default=6)
    s.add_argument("--lr", type=float, default=1e-5)
    s.add_argument("--teacher", choices=["frozen", "ema"], default="frozen")
    s.add_argument("--ema-rate", type=float, default=0.05)

    f = sub.add_parser("profile", help="split the engine's non-rollout step time against plain equivalents")
    f.add_argument("--work", required=True)
    f.add_argument("--batch", type=int, default=8)
    f.add_argument("--max-tokens", type=int, default=64)
    f.add_argument("--repeats", type=int, default=3)

    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.command == "prepare":
        cmd_prepare(args)
    elif args.command == "profile":
        cmd_profile(args)
    else:
        cmd_step(args)


if __name__ == "__main__":
    main()
