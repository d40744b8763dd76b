"""The JSON-lines worker, driven in a subprocess exactly as the TypeScript client drives it."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import ENGINE_DIR, engine_env

from distillery_engine.generate import SamplingParams, generate
from distillery_engine.score import score

TIMEOUT = 120  # seconds for one response; generous for a loaded CI machine


class WorkerProcess:
    """A worker subprocess; every stdout line is kept so the test can check nothing else was printed."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "distillery_engine.worker"],
            cwd=ENGINE_DIR,
            env=engine_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line)
        self._queue.put(None)

    def send_raw(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def next_message(self) -> dict[str, Any]:
        line = self._queue.get(timeout=TIMEOUT)
        assert line is not None, "worker closed stdout: " + self.stderr_text()
        self.lines.append(line)
        return json.loads(line)

    def call(self, request_id: Any, method: str, params: dict[str, Any] | None = None) -> tuple[dict, list[dict]]:
        """Send a request; return (final response, events streamed before it)."""
        request = {"id": request_id, "method": method}
        if params is not None:
            request["params"] = params
        self.send_raw(json.dumps(request))
        events = []
        while True:
            message = self.next_message()
            assert message["id"] == request_id, message
            if "event" in message:
                events.append(message["event"])
                continue
            return message, events

    def stderr_text(self) -> str:
        self.proc.kill()
        return self.proc.stderr.read() if self.proc.stderr else ""

    def wait(self) -> int:
        return self.proc.wait(timeout=TIMEOUT)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=TIMEOUT)
        self._reader.join(timeout=10)  # it ends at EOF on stdout; closing under it would race
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def test_worker_round_trip(tiny_model_dir: Path, tiny, tmp_path: Path):
    worker = WorkerProcess()
    try:
        response, _ = worker.call(1, "health")
        health = response["result"]
        assert health["ok"] is True and health["device"] == "cpu" and health["cuda"] is False
        assert {"python", "torch", "transformers", "peft", "bf16"} <= set(health)

        # Errors keep the worker alive: no model yet, unknown method, malformed lines, bad parameters.
        response, _ = worker.call(2, "generate", {"prompts": ["a"]})
        assert response["error"]["type"] == "RuntimeError" and "load" in response["error"]["message"]
        response, _ = worker.call("x", "fly")
        assert response["error"]["type"] == "ValueError" and "unknown method" in response["error"]["message"]
        worker.send_raw("{not json")
        message = worker.next_message()
        assert message["id"] is None and message["error"]["type"] == "ValueError"
        worker.send_raw("[1, 2]")
        assert worker.next_message()["id"] is None

        response, _ = worker.call(3, "load", {"model": str(tiny_model_dir), "device": "cpu"})
        loaded = response["result"]
        assert loaded["architecture"] == "LlamaForCausalLM" and loaded["model_type"] == "llama"
        assert loaded["vocab_size"] == 36 and loaded["eos_token_ids"] == [2]
        assert loaded["has_chat_template"] is False and loaded["parameters"] > 0

        response, _ = worker.call(4, "load", {"model": str(tmp_path / "missing")})
        assert response["error"]["type"] == "FileNotFoundError" and "Traceback" in response["error"]["traceback"]
        response, _ = worker.call(5, "generate", {"prompts": ["a"], "temprature": 0})
        assert "unknown sampling option" in response["error"]["message"]

        # generate: the same completions as the sampler in this process.
        params = {"n": 2, "temperature": 0.9, "seed": 4, "max_tokens": 8, "stop": ["!"], "batch_size": 3}
        prompts = ["hello", "a b c", "zz"]
        response, events = worker.call(6, "generate", {"prompts": prompts, **params})
        expected = generate(*tiny, prompts, SamplingParams(**params))
        assert response["result"]["completions"] == [c.to_dict() for c in expected]
        assert events[-1] == {"type": "progress", "done": 6, "total": 6}

        items = [{"prompt": "hello", "continuation": " world"}, {"prompt": "a", "continuation_ids": [5, 6]}]
        response, _ = worker.call(7, "score", {"items": items})
        expected_scores = score(*tiny, [("hello", " world"), ("a", [5, 6])])
        for got, want in zip(response["result"]["scores"], expected_scores):
            assert got["token_ids"] == want.token_ids
            assert got["total_logprob"] == pytest.approx(want.total_logprob, abs=1e-5)

        # run_job streams the job's events, then answers with its done event.
        prompts_file = tmp_path / "prompts.jsonl"
        prompts_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
        job = {"type": "sample", "output_dir": str(tmp_path / "job"), "model": str(tiny_model_dir),
               "prompts": str(prompts_file), "max_tokens": 4, "batch_size": 2}
        response, events = worker.call(8, "run_job", {"job": job})
        assert response["result"]["type"] == "done" and response["result"]["count"] == 3
        assert events[0]["type"] == "start" and events[-2]["type"] == "progress"
        assert events[-1] == response["result"]  # the done event is streamed, then returned
        response, _ = worker.call(9, "run_job", {"job": {**job, "type": "bake"}})
        assert "unknown job type" in response["error"]["message"]

        response, _ = worker.call(10, "shutdown")
        assert response["result"] == {"ok": True}
        assert worker.wait() == 0
    finally:
        worker.close()
    # Everything the worker wrote to stdout was a protocol line with an id.
    assert all("id" in json.loads(line) for line in worker.lines)


def test_worker_exits_on_eof():
    worker = WorkerProcess()
    assert worker.proc.stdin is not None
    worker.proc.stdin.close()
    try:
        assert worker.wait() == 0
    finally:
        worker.close()


def test_stray_prints_do_not_reach_protocol_stdout():
    code = (
        "import os, sys\n"
        "from distillery_engine.worker import claim_stdout\n"
        "out = claim_stdout()\n"
        "print('stray python print')\n"
        "os.write(1, b'stray native write\\n')\n"
        "out.write('protocol\\n'); out.flush()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ENGINE_DIR, env=engine_env(),
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "protocol\n"
    assert "stray python print" in result.stderr and "stray native write" in result.stderr
