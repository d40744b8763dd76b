"""The sample job (sample_job.py), job mode (jobs.py) and the event log (events.py)."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ENGINE_DIR, engine_env

from distillery_engine.events import EventLog
from distillery_engine.generate import SamplingParams, generate
from distillery_engine.jobs import run_job

PROMPTS = ["hello world", "a", "the quick brown fox jumps", "zz", "on a hill, far away", "b c", "xyz!", "q"]


def write_prompts(path: Path, prompts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"prompt": p, "id": i}) + "\n" for i, p in enumerate(prompts)))
    return path


def sample_spec(tmp_path: Path, model_dir: Path, name: str, prompts_file: Path, **options: Any) -> dict[str, Any]:
    return {
        "type": "sample", "output_dir": str(tmp_path / name), "model": str(model_dir), "adapter": None,
        "prompts": str(prompts_file), "output": "samples.jsonl",
        "n": 2, "temperature": 0.9, "top_p": 0.95, "seed": 11, "max_tokens": 10, "stop": ["!"], "batch_size": 3,
        **options,
    }


def read_events(output_dir: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (Path(output_dir) / "events.jsonl").read_text().splitlines()]


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    return write_prompts(tmp_path / "prompts.jsonl", PROMPTS)


def test_sample_job_output_matches_generate(tiny_model_dir, tiny, tmp_path, prompts_file):
    spec = sample_spec(tmp_path, tiny_model_dir, "job", prompts_file)
    done = run_job(spec)
    output = Path(spec["output_dir"]) / "samples.jsonl"
    assert done["type"] == "done" and done["count"] == 16 and done["output"] == str(output)

    records = [json.loads(line) for line in output.read_text().splitlines()]
    params = SamplingParams(**{k: spec[k] for k in ("n", "temperature", "top_p", "seed", "max_tokens", "stop")})
    expected = generate(*tiny, PROMPTS, params)
    assert records == [
        {"prompt_index": c.prompt_index, "sample_index": c.sample_index, "completion": c.text,
         "token_ids": c.token_ids, "finish_reason": c.finish_reason}
        for c in expected
    ]
    events = read_events(spec["output_dir"])
    assert events[0]["type"] == "start" and events[0]["job"] == "sample"
    assert events[-1] == done
    progress = [e for e in events if e["type"] == "progress"]
    assert progress[0]["done"] == 0
    assert (progress[-1]["done"], progress[-1]["total"]) == (16, 16)
    assert all(e["time"].endswith("Z") for e in events)

    # Re-running a finished job does nothing new and leaves the output as it was.
    before = output.read_bytes()
    assert run_job(spec)["count"] == 16
    assert output.read_bytes() == before


def test_resume_after_interrupt_and_torn_line_equals_uninterrupted_run(tiny_model_dir, tmp_path, prompts_file):
    reference = sample_spec(tmp_path, tiny_model_dir, "reference", prompts_file)
    run_job(reference)
    expected = (Path(reference["output_dir"]) / "samples.jsonl").read_bytes()

    spec = sample_spec(tmp_path, tiny_model_dir, "resumed", prompts_file)
    progress_seen = 0

    def interrupt_after_two_batches(event: dict[str, Any]) -> None:
        nonlocal progress_seen
        progress_seen += event["type"] == "progress"
        if progress_seen == 3:  # the initial progress event, then two batches
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_job(spec, sink=interrupt_after_two_batches)
    output = Path(spec["output_dir"]) / "samples.jsonl"
    assert len(output.read_text().splitlines()) == 6  # two batches of three rows
    assert read_events(spec["output_dir"])[-1]["message"].startswith("interrupted")
    # A kill in the middle of a write leaves a torn last line.
    with output.open("a") as f:
        f.write('{"prompt_index": 5, "sample_in')

    done = run_job(spec)
    assert done["count"] == 16
    assert output.read_bytes() == expected
    assert any("resuming: 6 of 16" in e.get("message", "") for e in read_events(spec["output_dir"]))


def test_sigterm_then_rerun_equals_uninterrupted_run(tiny_model_dir, tmp_path):
    prompts_file = write_prompts(tmp_path / "many.jsonl", [f"prompt number {i}" for i in range(60)])
    options = {"n": 1, "batch_size": 1, "max_tokens": 16, "stop": []}
    reference = sample_spec(tmp_path, tiny_model_dir, "reference", prompts_file, **options)
    run_job(reference)
    expected = (Path(reference["output_dir"]) / "samples.jsonl").read_bytes()

    spec = sample_spec(tmp_path, tiny_model_dir, "killed", prompts_file, **options)
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(spec))
    output = Path(spec["output_dir"]) / "samples.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "distillery_engine.jobs", str(job_file)], cwd=ENGINE_DIR,
                            env=engine_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (output.exists() and output.read_text().count("\n") >= 2):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the job wrote no samples in time"
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        stdout, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130
        assert stdout == ""  # job mode reports through events.jsonl only
    finally:
        if proc.poll() is None:
            proc.kill()
    written = output.read_text().count("\n")
    assert 2 <= written < 60, "the job was not stopped part-way"
    assert read_events(spec["output_dir"])[-1]["type"] == "log"

    # Resume in this process (a second interpreter start-up would only slow the test down).
    assert run_job(spec)["count"] == 60
    assert output.read_bytes() == expected


def test_bad_prompt_line_names_the_line(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"prompt": "fine"}\n{"text": "no prompt"}\n')
    spec = sample_spec(tmp_path, tiny_model_dir, "bad", bad)
    with pytest.raises(ValueError, match="line 3"):
        run_job(spec)
    last = read_events(spec["output_dir"])[-1]
    assert last["type"] == "error" and last["error_type"] == "ValueError" and "line 3" in last["message"]
    assert "Traceback" in last["traceback"]

    bad.write_text('{"prompt": "ok"}\n\n{"prompt": "fine"}\n')
    with pytest.raises(ValueError, match="line 2: empty line"):
        run_job(spec)
    bad.write_text('{"prompt": "ok"}\n{"prompt": 3')
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        run_job(spec)


def test_resume_with_different_settings_is_refused(tiny_model_dir, tmp_path, prompts_file):
    spec = sample_spec(tmp_path, tiny_model_dir, "job", prompts_file, max_tokens=3)
    run_job(spec)
    with pytest.raises(ValueError, match="changed: seed"):
        run_job({**spec, "seed": 12})
    run_job({**spec, "batch_size": 5})  # speed settings may change


def test_unknown_fields_and_types_fail_with_an_error_event(tiny_model_dir, tmp_path, prompts_file):
    spec = sample_spec(tmp_path, tiny_model_dir, "job", prompts_file, temprature=1)
    with pytest.raises(ValueError, match="temprature"):
        run_job(spec)
    with pytest.raises(ValueError, match="unknown job type"):
        run_job({**spec, "type": "bake"})
    assert read_events(spec["output_dir"])[-1]["type"] == "error"
    with pytest.raises(ValueError, match="output_dir"):
        run_job({"type": "sample"})


def test_failed_job_exits_1_with_an_error_event(tiny_model_dir, tmp_path, prompts_file):
    spec = sample_spec(tmp_path, tiny_model_dir, "bad", prompts_file, model=str(tmp_path / "nonexistent"))
    job_file = tmp_path / "bad.json"
    job_file.write_text(json.dumps(spec))
    result = subprocess.run([sys.executable, "-m", "distillery_engine.jobs", str(job_file)], cwd=ENGINE_DIR,
                            env=engine_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "model folder not found" in result.stderr
    last = read_events(spec["output_dir"])[-1]
    assert last["type"] == "error" and last["error_type"] == "FileNotFoundError"


def test_event_log(tmp_path):
    received: list[dict[str, Any]] = []
    with EventLog(tmp_path / "sub" / "events.jsonl", sink=received.append) as events:
        first = events.emit("progress", step=1, loss=math.nan, path=tmp_path)
        events.emit("done", steps=1)
    lines = [json.loads(line) for line in (tmp_path / "sub" / "events.jsonl").read_text().splitlines()]
    assert lines == received
    assert first == lines[0] and first["type"] == "progress" and first["loss"] is None
    assert first["path"] == str(tmp_path) and list(first)[:2] == ["time", "type"]
    with pytest.raises(ValueError):
        EventLog(None).emit("log", time="yesterday")
