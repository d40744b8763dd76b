"""The `sample` job: sample completions for every prompt of a JSONL file, resumably.

Spec (docs/architecture.md):
    {"type": "sample", "output_dir": DIR, "model": HF_DIR, "adapter": DIR|null,
     "prompts": JSONL of {"prompt": str, ...}, "output": "samples.jsonl",
     "n", "temperature", "top_k", "top_p", "min_p", "seed", "max_tokens", "stop", "chat_template", "batch_size",
     "device"?, "dtype"?}
`model`, `adapter` and `prompts` are paths as given (relative ones resolve against the working directory);
`output` is relative to `output_dir`.

Output lines: {"prompt_index", "sample_index", "completion", "token_ids", "finish_reason"}. They are appended and
fsynced after each batch, so a kill loses at most the batch in flight. A re-run truncates a torn last line,
skips the (prompt, sample) pairs already written and rebuilds the same batches, so the result equals an
uninterrupted run. When every pair is done the file is rewritten in (prompt_index, sample_index) order.

Next to the output, `<output stem>.params.json` records what produced it (model, prompts digest, decoding
options). A re-run with different settings refuses to mix its samples into the old file. batch_size, device
and dtype may change between runs: they change speed, not the distribution.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from .data import parse_object_line
from .events import EventLog, dumps
from .generate import SamplingParams, iter_generate
from .models import choose_placement, load_model

JOB_FIELDS = {"type", "output_dir", "model", "adapter", "prompts", "output", "device", "dtype"}
SAMPLING_FIELDS = set(SamplingParams.__dataclass_fields__)
# Options that do not change which samples a run produces (up to floating-point noise).
NOT_FINGERPRINTED = {"batch_size"}


def read_prompts(path: str | os.PathLike[str]) -> list[str]:
    """Prompts from a JSONL file of {"prompt": str, ...} objects; errors name the 1-based line number."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"prompts file not found: {p}")
    lines = p.read_text(encoding="utf-8").splitlines()
    while lines and not lines[-1].strip():  # trailing blank lines are harmless
        lines.pop()
    prompts: list[str] = []
    for lineno, line in enumerate(lines, start=1):
        where = f"{p} line {lineno}"
        if not line.strip():
            # Skipping it would shift every later prompt_index, so refuse.
            raise ValueError(f"{where}: empty line (every line must be a JSON object with a \"prompt\" string)")
        record = parse_object_line(line, where, column=True)
        if not isinstance(record.get("prompt"), str):
            raise ValueError(f"{where}: \"prompt\" must be a string")
        prompts.append(record["prompt"])
    if not prompts:
        raise ValueError(f"{p} has no prompts")
    return prompts


def parse_spec(spec: dict[str, Any]) -> tuple[dict[str, Any], SamplingParams]:
    """Split a sample job spec into its job fields and its decoding options, rejecting unknown fields."""
    unknown = sorted(set(spec) - JOB_FIELDS - SAMPLING_FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) in sample job: {unknown}")
    for name in ("output_dir", "model", "prompts"):
        if not isinstance(spec.get(name), str) or not spec[name]:
            raise ValueError(f"sample job needs \"{name}\" (a path)")
    for name in ("adapter", "device", "dtype"):
        if spec.get(name) is not None and not isinstance(spec[name], str):
            raise ValueError(f"\"{name}\" must be a string or null")
    output = spec.get("output", "samples.jsonl")
    if not isinstance(output, str) or not output:
        raise ValueError("\"output\" must be a file name")
    job = {name: spec.get(name) for name in JOB_FIELDS} | {"output": output}
    params = SamplingParams.from_dict({k: v for k, v in spec.items() if k in SAMPLING_FIELDS})
    return job, params


def fingerprint(job: dict[str, Any], params: SamplingParams, prompts_path: Path) -> dict[str, Any]:
    def resolved(path: str | None) -> str | None:
        return str(Path(path).resolve()) if path else None

    options = {k: v for k, v in vars(params).items() if k not in NOT_FINGERPRINTED}
    options["stop"] = list(params.stop)
    return {
        "model": resolved(job["model"]),
        "adapter": resolved(job["adapter"]),
        "prompts_sha256": hashlib.sha256(prompts_path.read_bytes()).hexdigest(),
        **options,
    }


def check_fingerprint(params_file: Path, output: Path, expected: dict[str, Any]) -> None:
    """Record the settings on a fresh start; refuse to resume an output made with other settings."""
    if params_file.exists():
        recorded = json.loads(params_file.read_text(encoding="utf-8"))
        changed = sorted(k for k in expected.keys() | recorded.keys() if expected.get(k) != recorded.get(k))
        if changed:
            raise ValueError(
                f"{output} was written by a sample job with different settings (changed: {', '.join(changed)}); "
                "delete it (and its .params.json) or choose another output"
            )
        return
    if output.exists() and output.stat().st_size > 0:
        raise ValueError(f"{output} exists but {params_file.name} does not; delete it or choose another output")
    tmp = params_file.with_name(params_file.name + ".tmp")
    tmp.write_text(json.dumps(expected, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, params_file)


def recover_output(output: Path, prompt_count: int, n: int) -> set[tuple[int, int]]:
    """Pairs already written to `output`. A torn last line (killed mid-write) is truncated away."""
    if not output.exists():
        return set()
    data = output.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with output.open("r+b") as f:
            f.truncate(end)
            os.fsync(f.fileno())
    done: set[tuple[int, int]] = set()
    for lineno, line in enumerate(data[:end].splitlines(), start=1):
        try:
            record = json.loads(line)
            pair = (record["prompt_index"], record["sample_index"])
            valid = all(isinstance(i, int) for i in pair) and 0 <= pair[0] < prompt_count and 0 <= pair[1] < n
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            valid = False
        if not valid:
            raise ValueError(f"{output} line {lineno}: not a sample of this job; delete the file to start over")
        done.add(pair)
    return done


def write_sorted(output: Path) -> None:
    """Rewrite the output in (prompt_index, sample_index) order, atomically."""
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    records.sort(key=lambda r: (r["prompt_index"], r["sample_index"]))
    tmp = output.with_name(output.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.writelines(dumps(r) + "\n" for r in records)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, output)


def run(spec: dict[str, Any], events: EventLog) -> dict[str, Any]:
    """Run (or resume) a sample job; returns the `done` summary: output, count, seconds."""
    started = time.monotonic()
    job, params = parse_spec(spec)
    prompts_path = Path(job["prompts"])
    prompts = read_prompts(prompts_path)
    output = Path(job["output_dir"]) / job["output"]
    output.parent.mkdir(parents=True, exist_ok=True)
    total = len(prompts) * params.n

    check_fingerprint(output.with_suffix(".params.json"), output, fingerprint(job, params, prompts_path))
    done = recover_output(output, len(prompts), params.n)
    if done:
        events.emit("log", message=f"resuming: {len(done)} of {total} samples already in {output.name}")
    events.emit("progress", done=len(done), total=total)

    if len(done) < total:
        placement = choose_placement(job["device"], job["dtype"])
        model, tokenizer = load_model(job["model"], job["adapter"], placement=placement)
        with output.open("a", encoding="utf-8") as f:
            for batch in iter_generate(model, tokenizer, prompts, params, skip=done):
                lines = [
                    dumps(
                        {
                            "prompt_index": c.prompt_index,
                            "sample_index": c.sample_index,
                            "completion": c.text,
                            "token_ids": c.token_ids,
                            "finish_reason": c.finish_reason,
                        }
                    )
                    + "\n"
                    for c in batch
                ]
                f.write("".join(lines))
                f.flush()
                os.fsync(f.fileno())
                done.update((c.prompt_index, c.sample_index) for c in batch)
                events.emit("progress", done=len(done), total=total)
    write_sorted(output)
    return {"output": str(output), "count": total, "seconds": round(time.monotonic() - started, 3)}
