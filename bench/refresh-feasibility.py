"""Feasibility check for the "stale model refresh" demo (src/demo/refresh-suite.ts).

Trains the char-level base from scratch on the refresh corpus with the engine's `train` job, then measures with
the engine's `generate`:
  - v2 tasks, plain student prompt            (should be low: the model writes v1 names)
  - v2 tasks, the same prompts scored with v1 (how well the base knows v1)
  - v2 tasks, SDFT teacher prompt with a v2 demonstration of the same question   (should be high)
  - v2 tasks, teacher prompt with a v2 demonstration of a different question     (informative only)
  - retention tasks (operator chains, no library)
Each at greedy (n=1) and T 1.0 (n=4, pass@1 = mean). Programs run as python3 subprocesses (`prompt + completion +
tests`) with a timeout; no sandbox.

Usage (dump the suite first, see the bottom of this docstring):
  DISTILLERY_THREADS=2 engine/.venv/bin/python bench/refresh-feasibility.py --data /tmp/refresh/full \
      --out /tmp/refresh/run1 [--steps 600 --batch 32 --lr 3e-3 --hidden 96 --layers 3 --inter 256]
  # --eval-only reuses <out>/base/final

Dump:
  npx tsx -e "import('./src/demo/refresh-suite.ts').then(({generateRefreshSuite: g}) => { ... })"
  (bench/refresh-dump.ts does it: npx tsx bench/refresh-dump.ts /tmp/refresh)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "engine"))

from distillery_engine.generate import SamplingParams, generate  # noqa: E402
from distillery_engine.jobs import run_job  # noqa: E402
from distillery_engine.models import load_model  # noqa: E402

TEMPLATE = (
    "\n$orig_content\n\nThis is an example for a response to the question:\n$output_text\n\n"
    "Now answer with a response of your own, including the thinking process.\n"
)


def teacher_prompt(question: str, demo: str) -> str:
    return TEMPLATE.replace("$orig_content", question).replace("$output_text", demo)


def read_jsonl(p: Path) -> list[dict]:
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


RUNNER = r"""
import json, sys, signal
def alarm(*a):
    raise TimeoutError()
signal.signal(signal.SIGALRM, alarm)
out = []
for src in json.load(sys.stdin):
    ok = False
    try:
        signal.alarm(2)
        exec(src, {})
        ok = True
    except BaseException:
        ok = False
    finally:
        signal.alarm(0)
    out.append(ok)
print(json.dumps(out))
"""


def run_programs(programs: list[str]) -> list[bool]:
    """Each program in a fresh namespace of one python3 process (2 s alarm each); unique programs only."""
    unique = sorted(set(programs))
    r = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(unique), capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    res = dict(zip(unique, json.loads(r.stdout)))
    return [res[p] for p in programs]


def score(model, tok, prompts: list[str], tasks: list[dict], stop: list[str], temperature: float, n: int,
          tests_key: str = "tests") -> tuple[float, list[str]]:
    params = SamplingParams(n=n, temperature=temperature, seed=1234, max_tokens=96, stop=tuple(stop), batch_size=64)
    comps = generate(model, tok, prompts, params)
    programs = []
    for c in comps:
        t = tasks[c.prompt_index]
        programs.append(t["prompt"] + c.text + t[tests_key])
    ok = run_programs(programs)
    texts = [c.text for c in comps]
    return sum(ok) / len(ok), texts


@torch.no_grad()
def next_char_probs(model, tok, contexts: list[str]) -> list[torch.Tensor]:
    out = []
    for c in contexts:
        ids = tok(c)["input_ids"]
        logits = model(torch.tensor([ids])).logits[0, -1]
        out.append(torch.softmax(logits.float(), -1))
    return out


def teacher_signal(model, tok, v2: list[dict]) -> dict[str, float]:
    """The SDFT learning signal where it matters: the student writes the v1 body; at the first character where a
    line of it differs from the v2 body, how much probability do the teacher (v2 demonstration in context, v1
    rollout so far) and the student put on v2's character and on v1's?"""
    st_ctx, te_ctx, v1c, v2c = [], [], [], []
    for t in v2:
        if not t.get("v1_solution"):
            continue
        a = t["v1_solution"].split("\n")
        b = t["canonical_solution"].split("\n")
        for i, (la, lb) in enumerate(zip(a, b)):
            if la == lb:
                continue
            j = next(k for k in range(min(len(la), len(lb))) if la[k] != lb[k])
            prefix = "".join(line + "\n" for line in a[:i]) + la[:j]
            st_ctx.append(t["prompt"] + prefix)
            te_ctx.append(teacher_prompt(t["prompt"], t["canonical_solution"]) + prefix)
            v1c.append(tok.convert_tokens_to_ids(la[j]))
            v2c.append(tok.convert_tokens_to_ids(lb[j]))
    ps, pt = next_char_probs(model, tok, st_ctx), next_char_probs(model, tok, te_ctx)
    n = len(v1c)
    mean = lambda xs: float(sum(xs) / max(1, len(xs)))  # noqa: E731
    return {
        "positions": n,
        "student p(v2 char)": mean([ps[i][v2c[i]].item() for i in range(n)]),
        "student p(v1 char)": mean([ps[i][v1c[i]].item() for i in range(n)]),
        "teacher p(v2 char)": mean([pt[i][v2c[i]].item() for i in range(n)]),
        "teacher p(v1 char)": mean([pt[i][v1c[i]].item() for i in range(n)]),
        "teacher argmax = v2 char": mean([float(pt[i].argmax().item() == v2c[i]) for i in range(n)]),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--hidden", type=int, default=96)
    ap.add_argument("--inter", type=int, default=256)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv", type=int, default=2)
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--signal-only", action="store_true", help="with --eval-only: only the teacher-signal figures")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("DISTILLERY_THREADS", "2")))

    data = Path(args.data)
    out = Path(args.out)
    meta = json.loads((data / "meta.json").read_text())
    alphabet: str = meta["alphabet"]
    vocab = 4 + len(dict.fromkeys(alphabet))
    model_cfg = {
        "model_type": "llama", "vocab_size": vocab, "hidden_size": args.hidden, "intermediate_size": args.inter,
        "num_hidden_layers": args.layers, "num_attention_heads": args.heads, "num_key_value_heads": args.kv,
        "max_position_embeddings": 512, "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2,
        "pad_token_id": 3, "rms_norm_eps": 1e-5, "rope_theta": 10000,
    }
    spec = {
        "type": "train", "output_dir": str(out / "base"), "model": None,
        "init": {"config": model_cfg, "tokenizer": {"kind": "char", "alphabet": alphabet}},
        "data": str(data / "corpus.jsonl"), "chat_template": False, "lora": None, "epochs": None,
        "max_steps": args.steps, "batch_size": args.batch, "lr": args.lr, "min_lr": 0.0, "warmup_steps": args.warmup,
        "max_seq_len": 448, "weight_decay": 0.0, "betas": [0.9, 0.95], "max_grad_norm": 1.0, "loss_on": "all",
        "seed": 0, "checkpoint_every": 100000,
    }
    t0 = time.time()
    if not args.eval_only:
        done = run_job(spec)
        print(f"train: {time.time() - t0:.1f} s, final loss {done.get('final_loss')}", flush=True)
    train_s = time.time() - t0
    model, tok = load_model(out / "base" / "final")
    model.eval()
    nparams = sum(p.numel() for p in dict((id(p), p) for p in model.parameters()).values())

    stop = meta["stop"]
    v2 = read_jsonl(data / "v2.jsonl")
    ret = read_jsonl(data / "retention.jsonl")
    sdft = read_jsonl(data / "sdft.jsonl")
    for t in v2:
        t["tests_v1"] = t["tests"].replace(meta["nsV2"], meta["nsV1"])
        assert t["tests_v1"] != t["tests"]
    student = [t["prompt"] for t in v2]
    teacher_same = [teacher_prompt(t["prompt"], t["canonical_solution"]) for t in v2]
    # a different question's v2 demonstration: the sdft record with the most library calls in common
    def calls(p: str) -> set[str]:
        return {w.split(" ")[0] for w in p.split("\n")[0][2:].split(", ")}
    teacher_other = []
    for i, t in enumerate(v2):
        cs = calls(t["prompt"])
        best = max(range(len(sdft)), key=lambda j: (len(cs & calls(sdft[j]["prompt"])), -((j - i * 3) % len(sdft))))
        teacher_other.append(teacher_prompt(t["prompt"], sdft[best]["demonstration"]))

    results: dict[str, float] = {}
    samples: dict[str, list[str]] = {}
    t1 = time.time()
    for name, prompts, tasks, key in [] if args.signal_only else [
        ("v2 student", student, v2, "tests"),
        ("v1 student (v1 lib tests)", student, v2, "tests_v1"),
        ("v2 teacher same-question demo", teacher_same, v2, "tests"),
        ("v2 teacher other-question demo", teacher_other, v2, "tests"),
        ("retention", [t["prompt"] for t in ret], ret, "tests"),
    ]:
        for temp, n in [(0.0, 1), (1.0, args.n)]:
            s, texts = score(model, tok, prompts, tasks, stop, temp, n, key)
            label = f"{name} T={temp}"
            results[label] = s
            samples[label] = texts[:6]
            print(f"{label:45s} pass@1 {100 * s:5.1f} %", flush=True)
    signal = teacher_signal(model, tok, v2)
    print("teacher signal at the first v1/v2 difference of each line:", json.dumps({k: round(v, 3) for k, v in signal.items()}))
    eval_s = time.time() - t1
    summary = {"teacher_signal": signal, "params": nparams, "train_seconds": train_s, "eval_seconds": eval_s, "args": vars(args), "results": results,
               "samples": samples}
    (out / "feasibility.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({"params": nparams, "train_s": round(train_s, 1), "eval_s": round(eval_s, 1)}))


if __name__ == "__main__":
    main()
