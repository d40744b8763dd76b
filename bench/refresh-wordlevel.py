"""Probe for the refresh demo with a word-level ("pieces") tokenizer: can a tiny base learn in context?

SDFT's teacher is the model itself with a demonstration in its prompt, so the refresh demo needs a base that
copies a new function name from a demonstration of the same question. The char-level suite
(src/demo/refresh-suite.ts, bench/refresh-feasibility.py) never got there. This script tries the same story with
one token per identifier (the engine's `pieces` tokenizer), which trains ~3.5x fewer tokens per document:

  corpus: v1 library tasks (one call), operator-chain tasks (retention), in-context documents in the SDFT
  teacher format whose example calls the library under a random alias from a pool (v2 names are in the pool:
  they exist as words, never as the right call in plain code) with a random argument order, and pure copy
  documents (a run of pool words, then the same run again).

It trains the base with the engine's train job, then measures greedy: the student on v1 tasks (v1 library), the
student on v2 tasks, the teacher prompt with a v2 demonstration of the same question (v2 library), and a pure
copy probe. Usage:

  DISTILLERY_THREADS=2 engine/.venv/bin/python bench/refresh-wordlevel.py --out /tmp/wl [--steps 1200]
      [--copy-share 0.25] [--pool 60] [--hidden 96 --layers 3 --heads 4 --inter 256]
      [--freeze-embeddings --init-range 0.1] [--v1-share 0.2]

Measured (docs/demo-design.md): trained embeddings of the interchangeable pool names collapse to one direction
(pairwise cosine ≈ 0.98) and the teacher never copies a name (0 of 60); with --freeze-embeddings --init-range 0.1
it copies pool names, and with --v1-share 0.2 also v1 names (60 of 60). The demo (src/demo/refresh-suite.ts) uses
the second design with the recipe's exact teacher template (this script's template ends in a newline).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))

from distillery_engine.generate import SamplingParams, generate  # noqa: E402
from distillery_engine.jobs import run_job  # noqa: E402
from distillery_engine.models import load_model  # noqa: E402

TEMPLATE = ("\n$orig_content\n\nThis is an example for a response to the question:\n$output_text\n\n"
            "Now answer with a response of your own, including the thinking process.\n")
PATTERN = r"\n|    | ?[A-Za-z_]+| ?[0-9]| ?[^A-Za-z_0-9\s]| "
# spec word: (v1 name, v1 argument order, v2 name, v2 argument order)
LIB = {"inc": ("shift", "xa", "offset", "xa"), "grow": ("scale", "xa", "mul", "xa"),
       "limit": ("clip", "xab", "clamp", "abx"), "cycle": ("wrap", "xa", "wrap", "ax"), "half": ("halve", "x", "halve", "x")}
LIB_V1 = ("def shift(x,a): return x+a\ndef scale(x,a): return x*a\ndef clip(x,a,b): return max(a,min(x,b))\n"
          "def wrap(x,a): return x%a\ndef halve(x): return x//2\n")
LIB_V2 = ("def offset(x,a): return x+a\ndef mul(x,a): return x*a\ndef clamp(a,b,x): return max(a,min(x,b))\n"
          "def wrap(a,x): return x%a\ndef halve(x): return x//2\n")
SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "ta", "vo", "si", "pe", "da", "go", "fu", "be", "zi", "no", "ha"]


class Suite:
    def __init__(self, seed: int, pool_size: int, v1_share: float = 0.0) -> None:
        self.rng = random.Random(seed)
        self.v1_share = v1_share
        pool: set[str] = set()
        while len(pool) < pool_size:
            pool.add("".join(self.rng.choice(SYLLABLES) for _ in range(self.rng.randint(1, 3))))
        pool |= {"offset", "mul", "clamp"}
        self.pool = sorted(pool - {"shift", "scale", "clip", "wrap", "halve"})

    def op(self) -> tuple[str, list[int]]:
        key = self.rng.choice(sorted(LIB))
        if key == "limit":
            a = self.rng.randint(0, 5)
            return key, [a, self.rng.randint(a + 2, 9)]
        return key, [] if key == "half" else [self.rng.randint(2, 9)]

    @staticmethod
    def prompt(key: str, consts: list[int]) -> str:
        return f"# {' '.join([key, *map(str, consts)])}\ndef f(x):\n"

    def body(self, name: str, order: str, consts: list[int], inline: bool | None = None) -> str:
        args = {"x": "x", "a": str(consts[0]) if consts else "", "b": str(consts[1]) if len(consts) > 1 else ""}
        call = f"{name}({','.join(args[o] for o in order)})"
        inline = self.rng.random() < 0.5 if inline is None else inline
        return f"    return {call}\n" if inline else f"    x = {call}\n    return x\n"

    def chain(self) -> dict[str, str]:
        ops = [(self.rng.choice([("add", "+"), ("times", "*"), ("sub", "-")]), self.rng.randint(2, 9))
               for _ in range(self.rng.randint(1, 3))]
        spec = ", ".join(f"{o[0]} {k}" for o, k in ops)
        lines = [f"    x = x{o[1]}{k}" for o, k in ops] + ["    return x"]
        return {"prompt": f"# {spec}\ndef f(x):\n", "completion": "\n".join(lines) + "\n"}

    def corpus(self, n: int, copy_share: float) -> list[dict[str, str]]:
        docs = []
        for _ in range(n):
            r = self.rng.random()
            key, consts = self.op()
            if r < 0.30:
                docs.append({"prompt": self.prompt(key, consts), "completion": self.body(LIB[key][0], LIB[key][1], consts)})
            elif r < 0.45:
                docs.append(self.chain())
            elif r < 1 - copy_share:
                order = "".join(self.rng.sample(LIB[key][1], len(LIB[key][1])))
                v1_name = self.rng.random() < self.v1_share
                name = self.rng.choice([v[0] for v in LIB.values()] if v1_name else self.pool)
                example = self.body(name, order, consts)
                docs.append({"prompt": teacher_prompt(self.prompt(key, consts), example), "completion": example})
            else:
                words = " ".join(self.rng.choice(self.pool) for _ in range(self.rng.randint(3, 10)))
                docs.append({"prompt": f"\n{words}\n\n", "completion": f"{words}\n"})
        return docs

    def probes(self, n: int) -> list[dict[str, str]]:
        out = []
        for _ in range(n):
            key, consts = self.op()
            inline = self.rng.random() < 0.5
            out.append({"prompt": self.prompt(key, consts), "v1": self.body(LIB[key][0], LIB[key][1], consts, inline),
                        "v2": self.body(LIB[key][2], LIB[key][3], consts, inline)})
        return out


def teacher_prompt(question: str, demonstration: str) -> str:
    return TEMPLATE.replace("$orig_content", question).replace("$output_text", demonstration)


def same_function(lib: str, prompt: str, body: str, reference: str) -> bool:
    try:
        got: dict = {}
        want: dict = {}
        exec(lib + prompt + body, got)  # noqa: S102 - our own generated programs
        exec(lib + prompt + reference, want)  # noqa: S102
        return all(got["f"](x) == want["f"](x) for x in range(-5, 12))
    except Exception:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--docs", type=int, default=8000)
    ap.add_argument("--copy-share", type=float, default=0.25)
    ap.add_argument("--pool", type=int, default=60)
    ap.add_argument("--hidden", type=int, default=96)
    ap.add_argument("--inter", type=int, default=256)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--v1-share", type=float, default=0.0,
                    help="share of in-context examples that use a v1 name (else a pool alias)")
    ap.add_argument("--init-range", type=float, default=0.02, help="initializer_range of the config (std of the initial weights)")
    ap.add_argument("--freeze-embeddings", action="store_true", help="keep token embeddings at their initial values")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suite = Suite(0, args.pool, args.v1_share)
    docs = suite.corpus(args.docs, args.copy_share)
    probes = suite.probes(60)
    (out / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    text = "".join(d["prompt"] + d["completion"] for d in docs) + "".join(p["prompt"] + p["v1"] + p["v2"] for p in probes)
    pieces = sorted(set(re.findall(PATTERN, text + TEMPLATE)) | {w for p in suite.pool for w in (p, " " + p)})
    config = {"model_type": "llama", "hidden_size": args.hidden, "intermediate_size": args.inter,
              "num_hidden_layers": args.layers, "num_attention_heads": args.heads, "num_key_value_heads": args.heads,
              "max_position_embeddings": 256, "tie_word_embeddings": True,
              "initializer_range": args.init_range}
    summary = run_job({
        "type": "train", "output_dir": str(out / "base"), "data": str(out / "corpus.jsonl"), "loss_on": "all",
        "init": {"config": config, "tokenizer": {"kind": "pieces", "pieces": pieces, "pattern": PATTERN}},
        "max_seq_len": 160, "max_steps": args.steps, "batch_size": args.batch, "lr": args.lr, "warmup_steps": 50,
        "betas": [0.9, 0.95], "checkpoint_every": None, "seed": 0,
        "freeze_embeddings": args.freeze_embeddings,
    })
    model, tok = load_model(summary["final_dir"])
    model.eval()
    greedy = SamplingParams(temperature=0, max_tokens=24, stop=["\n\n", "\n#", "\ndef"])
    student = generate(model, tok, [p["prompt"] for p in probes], greedy)
    teacher = generate(model, tok, [teacher_prompt(p["prompt"], p["v2"]) for p in probes], greedy)
    copies = [" ".join(suite.rng.choice(suite.pool) for _ in range(6)) for _ in range(20)]
    copied = generate(model, tok, [f"\n{c}\n\n" for c in copies], SamplingParams(temperature=0, max_tokens=16, stop=["\n"]))
    result = {
        "train_seconds": summary["seconds"], "final_loss": summary["final_loss"], "args": vars(args),
        "student_v1_correct": sum(same_function(LIB_V1, p["prompt"], s.text, p["v1"]) for p, s in zip(probes, student)) / len(probes),
        "student_v2_correct": sum(same_function(LIB_V2, p["prompt"], s.text, p["v2"]) for p, s in zip(probes, student)) / len(probes),
        "teacher_v2_correct": sum(same_function(LIB_V2, p["prompt"], t.text, p["v2"]) for p, t in zip(probes, teacher)) / len(probes),
        "pure_copy_exact": sum(c.text == w for c, w in zip(copied, copies)) / len(copies),
        "teacher_samples": [[p["v2"], t.text] for p, t in list(zip(probes, teacher))[:6]],
    }
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "teacher_samples"}, indent=2))


if __name__ == "__main__":
    main()
