"""Distillery benchmark worker: prepares a benchmark model and runs one measurement per process.

Driven by bench/run.ts (`npm run bench`); each sub-command prints exactly one line `BENCH_RESULT {json}` on
stdout (everything else goes to stderr), so the driver can read it whatever the libraries print.

    python bench/bench.py info
    python bench/bench.py prepare --model NAME --models bench/models.json --work DIR [--seq-len 128 --prompt-len 64]
    python bench/bench.py sample --work DIR --impl engine,engine-stop,hf --batch B [--max-tokens 64]
    python bench/bench.py train  --work DIR --impl engine|trl|trl-nll [--batch 16 --warmup-steps 2 --steps 8]

Training runs one implementation per process; sampling runs the implementations it is given interleaved in one
process (same loaded model), so a slow stretch of machine time hits them alike. Peak memory is taken over the
timed part only: on CPU the highest RSS seen by a polling thread, on CUDA torch.cuda.max_memory_allocated.

Device and precision come from the engine's own rule (distillery_engine.models.choose_placement): CUDA with
bf16 (sampling in bf16 weights, training fp32 master weights under bf16 autocast) when available, else CPU
fp32. The TRL side is configured to the same precision. `--device` / `--dtype` override, as in job specs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch

from distillery_engine.models import (
    build_char_tokenizer,
    build_model_from_config,
    choose_placement,
    count_parameters,
    load_model,
    load_tokenizer,
    save_model,
)

# A stop string that can never match (`|` is in neither benchmark alphabet), so the `engine-stop` variant pays
# the engine's per-token stop-string check on every token while generating exactly as many tokens as `engine`.
NEVER_STOP = "<|never|>"
# First code point of the filler characters that pad the `char-padded` tokenizer to a large vocabulary
# (CJK ideographs onwards, surrogates skipped).
FILLER_START = 0x4E00


def emit(result: dict[str, Any]) -> None:
    print("BENCH_RESULT " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------------------------- environment


def placement_of(args: argparse.Namespace):
    return choose_placement(args.device, args.dtype)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def process_peak_rss() -> int:
    """The process's peak RSS so far, in bytes (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Peak memory over a `with` block. CUDA: torch.cuda.max_memory_allocated (reset on entry). CPU: the
    highest RSS seen by a thread polling the process every 5 ms (ru_maxrss cannot be reset, and several
    implementations share a process when sampling)."""

    INTERVAL_S = 0.005

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def kind(device: torch.device) -> str:
        return "cuda_max_allocated" if device.type == "cuda" else "rss_peak"

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            import psutil

            proc = psutil.Process()
            self.peak = proc.memory_info().rss

            def poll() -> None:
                while not self._stop.wait(self.INTERVAL_S):
                    self.peak = max(self.peak, proc.memory_info().rss)

            self._thread = threading.Thread(target=poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = int(torch.cuda.max_memory_allocated(self.device))
        else:
            self._stop.set()
            assert self._thread is not None
            self._thread.join()
            import psutil

            self.peak = max(self.peak, psutil.Process().memory_info().rss)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, Any]:
    import transformers

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env


# ----------------------------------------------------------------------------------------------- prepare


def write_tokenizer(spec: dict[str, Any], out_dir: Path) -> None:
    kind = spec.get("kind")
    alphabet = spec["alphabet"]
    if kind == "char":
        build_char_tokenizer(alphabet, out_dir)
    elif kind == "char-padded":
        # A character tokenizer padded with filler characters to `vocab_size` ids, so a model with a realistic
        # vocabulary (embedding and lm_head sizes) has a tokenizer that covers every id it can sample.
        distinct = list(dict.fromkeys(alphabet))
        filler = spec["vocab_size"] - 4 - len(distinct)  # 4 special tokens
        if filler < 0:
            raise ValueError("char-padded tokenizer: vocab_size is smaller than the alphabet")
        build_char_tokenizer("".join(distinct) + "".join(filler_chars(filler, set(distinct))), out_dir)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected char or char-padded")


def filler_chars(count: int, taken: set[str]) -> list[str]:
    """`count` distinct characters from FILLER_START upwards, skipping surrogates and the alphabet's own."""
    out: list[str] = []
    code = FILLER_START
    while len(out) < count:
        if 0xD800 <= code <= 0xDFFF:
            code = 0xE000
        if code > 0x10FFFF:
            raise ValueError("char-padded tokenizer: vocab_size is larger than Unicode")
        ch = chr(code)
        if ch not in taken:
            out.append(ch)
        code += 1
    return out


def random_text(rng: random.Random, alphabet: str, length: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(length))


def cmd_prepare(args: argparse.Namespace) -> None:
    """Build the model (seeded init) into WORK/model, plus prompts.jsonl and train.jsonl of fixed token lengths."""
    from distillery_engine.data import Example, tokenize_example

    models = json.loads(Path(args.models).read_text())
    if args.model not in models:
        raise SystemExit(f"unknown model {args.model!r}; models.json has {sorted(models)}")
    entry = models[args.model]
    work = Path(args.work)
    model_dir = work / "model"
    work.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="bench-tok-") as tok_dir:
        write_tokenizer(entry["tokenizer"], Path(tok_dir))
        tokenizer = load_tokenizer(tok_dir)
    # The same defaults as the train job's `init` path (train._build_model).
    config = dict(entry["config"])
    if config.setdefault("vocab_size", len(tokenizer)) < len(tokenizer):
        raise SystemExit(f"{args.model}: vocab_size {config['vocab_size']} < tokenizer size {len(tokenizer)}")
    config.setdefault("bos_token_id", tokenizer.bos_token_id)
    config.setdefault("eos_token_id", tokenizer.eos_token_id)
    config.setdefault("pad_token_id", tokenizer.pad_token_id)
    model = build_model_from_config(config, seed=args.seed)
    save_model(model, tokenizer, model_dir)

    # Data text uses the plain alphabet without the newline (the filler characters are there only to be sampled).
    text_alphabet = entry["tokenizer"]["alphabet"].replace("\n", "")
    rng = random.Random(args.seed)
    prompt_chars = args.prompt_len - 1  # + BOS
    completion_chars = args.seq_len - args.prompt_len - 1  # + EOS
    with (work / "prompts.jsonl").open("w") as f:
        for _ in range(args.prompts):
            f.write(json.dumps({"prompt": random_text(rng, text_alphabet, prompt_chars)}) + "\n")
    rows = [
        {"prompt": random_text(rng, text_alphabet, prompt_chars), "completion": random_text(rng, text_alphabet, completion_chars)}
        for _ in range(args.examples)
    ]
    with (work / "train.jsonl").open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    # Every example must be exactly seq_len tokens for the engine (so no padding anywhere and tokens per step
    # is batch * seq_len on both sides); the TRL runner checks its own tokenization the same way.
    check = tokenize_example(tokenizer, Example(rows[0]["prompt"], rows[0]["completion"], 1), "completion", False, None)
    assert check is not None and len(check.input_ids) == args.seq_len, len(check.input_ids) if check else None
    assert sum(1 for label in check.labels if label != -100) == args.seq_len - args.prompt_len

    meta = {
        "model": args.model,
        "description": entry.get("description", ""),
        "model_type": config.get("model_type", "llama"),
        "parameters": count_parameters(model),
        "vocab_size": config["vocab_size"],
        "tokenizer_size": len(tokenizer),
        "config": entry["config"],
        "seq_len": args.seq_len,
        "prompt_len": args.prompt_len,
        "examples": args.examples,
        "prompts": args.prompts,
        "seed": args.seed,
    }
    (work / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    emit(meta)


# ----------------------------------------------------------------------------------------------- sampling


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def disable_eos(model, tokenizer) -> None:
    """No EOS, so every row generates exactly max_tokens tokens on both sides (a random-init model would
    otherwise end rows at random points, and the two implementations would do different amounts of work)."""
    model.config.eos_token_id = None
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.eos_token_id = None
    tokenizer.eos_token = None


def make_sampler(impl: str, model, tokenizer, prompts: list[str], max_tokens: int, device: torch.device) -> Callable[[int], int]:
    """A function seed -> tokens generated, doing the whole request: encode, sample, decode."""
    from distillery_engine.generate import SamplingParams, generate

    if impl in ("engine", "engine-stop"):
        params = SamplingParams(
            n=1, temperature=1.0, max_tokens=max_tokens, batch_size=len(prompts),
            stop=(NEVER_STOP,) if impl == "engine-stop" else (),
        )

        def run_engine(seed: int) -> int:
            completions = generate(model, tokenizer, prompts, replace(params, seed=seed))
            return sum(len(c.token_ids) for c in completions)

        return run_engine
    if impl == "hf":
        pad_id = tokenizer.pad_token_id

        @torch.inference_mode()
        def run_hf(seed: int) -> int:
            torch.manual_seed(seed)
            tokenizer.padding_side = "left"
            enc = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
            out = model.generate(
                **enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=max_tokens,
                min_new_tokens=max_tokens, pad_token_id=pad_id, eos_token_id=None,
            )
            new = out[:, enc["input_ids"].shape[1]:]
            tokenizer.batch_decode(new.tolist(), skip_special_tokens=True)
            return int(new.numel())

        return run_hf
    raise SystemExit(f"unknown sampling impl {impl!r}; expected engine, engine-stop or hf")


def cmd_sample(args: argparse.Namespace) -> None:
    """Each implementation in --impl, interleaved: warm-up rounds, then `repeats` rounds of one call each, so
    a slow patch of machine time (other load) hits every implementation alike. One result line per impl."""
    work = Path(args.work)
    placement = placement_of(args)
    device = placement.device
    model, tokenizer = load_model(work / "model", placement=placement)
    model.eval()
    disable_eos(model, tokenizer)
    prompts = [r["prompt"] for r in read_jsonl(work / "prompts.jsonl")][: args.batch]
    if len(prompts) < args.batch:
        raise SystemExit(f"prompts.jsonl has {len(prompts)} prompts; batch {args.batch} needs more")
    impls = args.impl.split(",")
    samplers = {impl: make_sampler(impl, model, tokenizer, prompts, args.max_tokens, device) for impl in impls}
    expected = args.batch * args.max_tokens

    for w in range(args.warmup):
        for impl in impls:
            samplers[impl](10_000 + w)
    seconds: dict[str, list[float]] = {impl: [] for impl in impls}
    peaks: dict[str, int] = {impl: 0 for impl in impls}
    load = [os.getloadavg()[0]]
    for r in range(args.repeats):
        for impl in impls:
            with PeakMemory(device) as mem:
                start = time.perf_counter()
                n = samplers[impl](r)
                sync(device)
                seconds[impl].append(time.perf_counter() - start)
            peaks[impl] = max(peaks[impl], mem.peak)
            if n != expected:
                raise SystemExit(f"{impl}: generated {n} tokens, expected {expected}")
    load.append(os.getloadavg()[0])
    env = environment(device)
    for impl in impls:
        rates = [expected / s for s in seconds[impl]]
        emit({
            "kind": "sample", "impl": impl, "batch": args.batch, "max_tokens": args.max_tokens,
            "prompt_len": len(tokenizer(prompts[0])["input_ids"]), "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "tokens_per_s": statistics.median(rates), "tokens_per_s_best": max(rates), "tokens_per_s_all": rates,
            "seconds_all": seconds[impl],
            "tokens_per_repeat": expected, "warmup": args.warmup, "repeats": args.repeats,
            "peak_memory_bytes": peaks[impl], "peak_memory_kind": PeakMemory.kind(device),
            "process_peak_rss_bytes": process_peak_rss(), "loadavg_1m": load, **env,
        })


# ----------------------------------------------------------------------------------------------- training


def step_stats(times: list[float], warmup_steps: int, tokens_per_step: int) -> dict[str, Any]:
    """times[i] = perf_counter when optimizer step i+1 ended. A step's duration is the time since the previous
    step ended (so it includes data collation, logging and any per-step bookkeeping). The first `warmup_steps`
    steps are not counted; the first step has no predecessor, so at least one step is always warm-up."""
    durations = [b - a for a, b in zip(times, times[1:])][max(0, warmup_steps - 1):]
    if not durations:
        raise SystemExit("no timed training steps")
    median = statistics.median(durations)
    return {
        "tokens_per_s": tokens_per_step / median,
        "tokens_per_s_mean": tokens_per_step * len(durations) / sum(durations),
        "tokens_per_s_best": tokens_per_step / min(durations),
        "step_seconds_median": median,
        "step_seconds_all": durations,
        "tokens_per_step": tokens_per_step,
        "timed_steps": len(durations),
        "warmup_steps": warmup_steps,
    }


class StepClock:
    """Called at the end of every optimizer step (after optimizer.step(), device synchronised). Records the
    time and loss; starts the memory window when the warm-up steps are over."""

    def __init__(self, device: torch.device, warmup_steps: int, total_steps: int) -> None:
        self.device = device
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        self._open = False
        self.times: list[float] = []
        self.losses: list[float] = []
        self.memory = PeakMemory(device)
        self.load: list[float] = []

    def step_end(self) -> None:
        sync(self.device)
        self.times.append(time.perf_counter())
        if len(self.times) == self.warmup_steps:
            self.load.append(os.getloadavg()[0])
            self.memory.__enter__()
            self._open = True
        if len(self.times) == self.total_steps:
            self.finish()  # the memory window ends with the last step, before any final saving

    def finish(self) -> None:
        if self._open:
            self._open = False
            self.memory.__exit__(None, None, None)
            self.load.append(os.getloadavg()[0])


def cmd_train(args: argparse.Namespace) -> None:
    work = Path(args.work)
    meta = json.loads((work / "meta.json").read_text())
    placement = placement_of(args)
    device = placement.device
    seq_len = meta["seq_len"]
    tokens_per_step = args.batch * seq_len  # every example is exactly seq_len tokens (checked in prepare)
    if args.warmup_steps < 1 or args.steps < 1:
        raise SystemExit("--warmup-steps and --steps must be >= 1 (the first step has no start time of its own)")
    total_steps = args.warmup_steps + args.steps
    n_examples = len(read_jsonl(work / "train.jsonl"))
    if n_examples < total_steps * args.batch:
        raise SystemExit(f"train.jsonl has {n_examples} examples; {total_steps} steps of {args.batch} need more")
    clock = StepClock(device, args.warmup_steps, total_steps)
    out_dir = Path(tempfile.mkdtemp(prefix=f"train-{args.impl}-", dir=work))
    extra: dict[str, Any] = {}

    if args.impl == "engine":
        from distillery_engine.jobs import run_job

        spec = {
            "type": "train", "output_dir": str(out_dir), "model": str(work / "model"), "data": str(work / "train.jsonl"),
            "loss_on": "completion", "max_seq_len": seq_len, "lr": args.lr, "max_steps": total_steps,
            "batch_size": args.batch, "grad_accum": 1, "warmup_steps": 0, "weight_decay": 0.0,
            "max_grad_norm": 1.0, "seed": 0, "checkpoint_every": None, "device": args.device, "dtype": args.dtype,
        }

        def sink(event: dict[str, Any]) -> None:
            if event["type"] == "progress":  # emitted right after optimizer.step() / scheduler.step()
                clock.step_end()
                clock.losses.append(event["loss"])

        run_job(spec, sink)
    elif args.impl in ("trl", "trl-nll"):
        extra = train_trl(args, work, out_dir, meta, total_steps, clock, placement)
    else:
        raise SystemExit(f"unknown training impl {args.impl!r}; expected engine, trl or trl-nll")
    clock.finish()

    if len(clock.times) != total_steps:
        raise SystemExit(f"{args.impl}: saw {len(clock.times)} step ends, expected {total_steps}")
    emit({
        "kind": "train", "impl": args.impl, "batch": args.batch, "seq_len": seq_len, "lr": args.lr,
        "autocast": str(placement.autocast_dtype).removeprefix("torch.") if placement.autocast_dtype else None,
        "loss_first": clock.losses[0] if clock.losses else None,
        "loss_last": clock.losses[-1] if clock.losses else None,
        **step_stats(clock.times, args.warmup_steps, tokens_per_step), **extra,
        "peak_memory_bytes": clock.memory.peak, "peak_memory_kind": PeakMemory.kind(device),
        "process_peak_rss_bytes": process_peak_rss(), "loadavg_1m": clock.load, **environment(device),
    })


def trl_training_args(out_dir: Path, batch: int, total_steps: int, lr: float, placement) -> dict[str, Any]:
    """TRL/transformers training arguments that match the engine's training loop: cosine to 0 with no warmup,
    AdamW (torch) with betas 0.9/0.999 and no weight decay, grad clipping 1.0, one micro-batch per step, the same
    precision (fp32, or bf16 autocast where the engine uses it), no gradient checkpointing (TRL's default is on),
    logging every step, nothing saved."""
    if placement.autocast_dtype not in (None, torch.bfloat16):
        raise SystemExit("the TRL side supports fp32 or bf16 autocast only")
    return dict(
        output_dir=str(out_dir),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=1,
        max_steps=total_steps,
        learning_rate=lr,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.999,
        max_grad_norm=1.0,
        optim="adamw_torch",
        bf16=placement.autocast_dtype == torch.bfloat16,
        fp16=False,
        use_cpu=placement.device.type == "cpu",
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
    )


def train_trl(args: argparse.Namespace, work: Path, out_dir: Path, meta: dict[str, Any], total_steps: int,
              clock: StepClock, placement) -> dict[str, Any]:
    """The same SFT workload through TRL's SFTTrainer: same initial weights (the same model folder), data,
    batch, sequence length, steps, lr and schedule (cosine to 0, no warmup), AdamW (torch), grad clipping 1.0,
    completion-only loss, and the same precision (fp32 on CPU; fp32 master weights + bf16 autocast on CUDA).

    Settings that would change what is computed are set to match the engine: gradient checkpointing off (TRL
    defaults it on), bf16 only where the engine uses it (TRL defaults it on), logging every step (the engine
    reports every step). TRL's default loss ("chunked_nll": lm_head only on label positions, in chunks) is kept
    for `trl`; `trl-nll` uses the plain loss (full logits), like the engine.
    """
    import datasets
    import transformers
    import trl
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    datasets.disable_progress_bars()
    seq_len = meta["seq_len"]
    model = AutoModelForCausalLM.from_pretrained(str(work / "model"), dtype=torch.float32)
    model.config.use_cache = False  # the engine's forward passes use_cache=False too
    tokenizer = load_tokenizer(work / "model")
    dataset = datasets.Dataset.from_list(read_jsonl(work / "train.jsonl"))
    config = SFTConfig(
        **trl_training_args(out_dir, args.batch, total_steps, args.lr, placement),
        max_length=seq_len,
        packing=False,
        padding_free=False,
        completion_only_loss=True,
        loss_type="nll" if args.impl == "trl-nll" else "chunked_nll",
    )

    class StepTimer(TrainerCallback):
        def on_step_end(self, _args, state, control, **kwargs):  # after optimizer.step() and zero_grad()
            clock.step_end()

        def on_log(self, _args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:  # logging_steps=1: one per step
                clock.losses.append(float(logs["loss"]))

    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer, callbacks=[StepTimer()])
    # The same token layout as the engine: BOS + prompt, completion + EOS, exactly seq_len tokens, loss on the
    # completion only.
    first = trainer.train_dataset[0]
    if len(first["input_ids"]) != seq_len:
        raise SystemExit(f"TRL tokenized an example to {len(first['input_ids'])} tokens, expected {seq_len}")
    if "completion_mask" in first and sum(first["completion_mask"]) != seq_len - meta["prompt_len"]:
        raise SystemExit("TRL's completion mask does not cover the completion + EOS exactly")
    trainer.train()
    return {"trl": trl.__version__, "datasets": datasets.__version__, "trl_loss_type": config.loss_type,
            "trl_optim": str(config.optim), "transformers_trainer": transformers.__version__}


# ----------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.py", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default=None, help="auto (default), float32, bfloat16")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("info")

    p = sub.add_parser("prepare")
    p.add_argument("--model", required=True)
    p.add_argument("--models", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--examples", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)

    s = sub.add_parser("sample")
    s.add_argument("--work", required=True)
    s.add_argument("--impl", required=True, help="comma-separated, run interleaved: engine, engine-stop, hf")
    s.add_argument("--batch", type=int, required=True)
    s.add_argument("--max-tokens", type=int, default=64)
    s.add_argument("--warmup", type=int, default=1)
    s.add_argument("--repeats", type=int, default=3)

    t = sub.add_parser("train")
    t.add_argument("--work", required=True)
    t.add_argument("--impl", required=True, choices=["engine", "trl", "trl-nll"])
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--warmup-steps", type=int, default=2)
    t.add_argument("--steps", type=int, default=8)
    t.add_argument("--lr", type=float, default=5e-4)

    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.command == "info":
        emit(environment(placement_of(args).device) | {"bf16": placement_of(args).autocast_dtype == torch.bfloat16})
    elif args.command == "prepare":
        cmd_prepare(args)
    elif args.command == "sample":
        cmd_sample(args)
    elif args.command == "train":
        cmd_train(args)


if __name__ == "__main__":
    main()
