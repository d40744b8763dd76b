"""Worker mode: `python -m distillery_engine.worker`, a JSON-lines server over stdio.

    request : {"id": 7, "method": "generate", "params": {...}}
    result  : {"id": 7, "result": {...}}
    error   : {"id": 7, "error": {"type": "ValueError", "message": "...", "traceback": "..."}}
    event   : {"id": 7, "event": {"type": "progress", ...}}      (zero or more before the result)

Methods: health, load, generate, score, run_job, shutdown (docs/architecture.md), and for `distillery serve`:
complete (one completion, streamed as `delta` events, optionally with log-probs) and cancel. Requests are
served one at a time, in order. A failed request becomes an error response and the worker keeps serving; a
line that is not a JSON request gets an error with id null. EOF on stdin, or `shutdown`, exits 0.

stdin is read on a thread, so that a `cancel` request ({"key": K}) takes effect at once: a running `complete`
whose params carried the same "cancel_key" stops at its next token with a `Cancelled` error. The cancel request
itself is then answered in its turn, like any other.

stdout carries protocol lines only. At start-up the real stdout is duplicated for the protocol and file
descriptor 1 is pointed at stderr, so stray prints, from Python or from native code, land in the log instead
of corrupting the stream.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import signal
import queue
import sys
import threading
import traceback
from collections.abc import Callable
from importlib.metadata import version
from typing import Any, TextIO

import torch

from .events import dumps
from .jobs import raise_keyboard_interrupt

Handler = Callable[[dict[str, Any], Callable[[dict[str, Any]], None]], dict[str, Any]]


def claim_stdout() -> TextIO:
    """Return a private handle on the real stdout and send everything else written to stdout to stderr."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "w", encoding="utf-8", buffering=1)


def _params(params: dict[str, Any], allowed: set[str], required: frozenset[str] | set[str] = frozenset()) -> None:
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ValueError(f"unknown parameter(s) {unknown}; expected some of {sorted(allowed)}")
    missing = sorted(required - set(params))
    if missing:
        raise ValueError(f"missing parameter(s) {missing}")


class Worker:
    """Holds at most one loaded model and answers requests against it."""

    def __init__(self, cancelled: set[str] | None = None) -> None:
        self.model: Any = None
        self.tokenizer: Any = None
        # Cancel keys seen on stdin (added by the reader thread, possibly while a request runs).
        self.cancelled: set[str] = cancelled if cancelled is not None else set()
        self.handlers: dict[str, Handler] = {
            "health": self.health,
            "load": self.load,
            "generate": self.generate,
            "score": self.score,
            "run_job": self.run_job,
            "complete": self.complete,
            "cancel": self.cancel,
        }

    def _loaded(self) -> None:
        if self.model is None:
            raise RuntimeError("no model is loaded; send a \"load\" request first")

    def health(self, params: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        from .models import choose_placement

        _params(params, set())
        placement = choose_placement()
        cuda = torch.cuda.is_available()
        return {
            "ok": True,
            "python": platform.python_version(),
            "torch": torch.__version__,
            # Versions from package metadata: importing peft just to read its version costs seconds.
            "transformers": version("transformers"),
            "peft": version("peft"),
            "device": placement.device.type,
            "cuda": cuda,
            "bf16": bool(cuda and torch.cuda.is_bf16_supported()),
        }

    def load(self, params: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        from .generate import eos_token_ids
        from .models import check_model_dir, choose_placement, count_parameters, load_model

        _params(params, {"model", "adapter", "device", "dtype"}, {"model"})
        check_model_dir(params["model"])  # a wrong path keeps the current model
        placement = choose_placement(params.get("device"), params.get("dtype"))
        # One model at a time: free the old one before loading the next, or two may not fit. If the load then
        # fails, no model is loaded.
        self.model = self.tokenizer = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        model, tokenizer = load_model(params["model"], params.get("adapter"), placement=placement)
        self.model, self.tokenizer = model, tokenizer
        config = model.config
        head = model.get_output_embeddings()
        return {
            "architecture": (getattr(config, "architectures", None) or [type(model).__name__])[0],
            "model_type": config.model_type,
            "parameters": count_parameters(model),
            "vocab_size": head.weight.shape[0] if head is not None else config.vocab_size,
            "eos_token_ids": eos_token_ids(model, tokenizer),
            "has_chat_template": bool(getattr(tokenizer, "chat_template", None)),
            "device": str(placement.device),
            "dtype": str(placement.infer_dtype).removeprefix("torch."),
        }

    def generate(self, params: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        from .generate import SamplingParams, generate

        self._loaded()
        options = dict(params)
        prompts = options.pop("prompts", None)
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise ValueError("\"prompts\" must be a list of strings")
        sampling = SamplingParams.from_dict(options)

        def progress(done: int, total: int) -> None:
            emit({"type": "progress", "done": done, "total": total})

        completions = generate(self.model, self.tokenizer, prompts, sampling, on_batch=progress)
        return {"completions": [c.to_dict() for c in completions]}

    def score(self, params: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        from .score import score

        self._loaded()
        _params(params, {"items", "chat_template", "batch_size"}, {"items"})
        items = params["items"]
        if not isinstance(items, list):
            raise ValueError("\"items\" must be a list of {\"prompt\", \"continuation\"} objects")
        pairs = []
        for index, item in enumerate(items):
            ok = isinstance(item, dict) and isinstance(item.get("prompt"), str)
            ok = ok and (isinstance(item.get("continuation"), str)) != ("continuation_ids" in item)
            if not ok:
                raise ValueError(
                    f"items[{index}] must be {{\"prompt\": str, \"continuation\": str}} "
                    "(or \"continuation_ids\": [int] instead of \"continuation\")"
                )
            pairs.append((item["prompt"], item.get("continuation", item.get("continuation_ids"))))
        chat_template = params.get("chat_template", False)
        batch_size = params.get("batch_size", 16)
        if not isinstance(chat_template, bool):
            raise ValueError("\"chat_template\" must be true or false")
        if not isinstance(batch_size, int) or isinstance(batch_size, bool):
            raise ValueError("\"batch_size\" must be an integer")
        scores = score(self.model, self.tokenizer, pairs, chat_template=chat_template, batch_size=batch_size)
        return {"scores": [s.to_dict() for s in scores]}

    def complete(self, params: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """One completion for the server: `prompt` (text) or `prompt_ids`, the decoding options, `logprobs`
        (null, or how many alternatives per token), `stream` (emit {"type": "delta", "text", "logprobs"} events).
        `add_special_tokens` (default true) is for text prompts: false when a chat template already wrote them."""
        from .generate import SamplingParams, stream_completion

        self._loaded()
        sampling_keys = {"temperature", "top_k", "top_p", "min_p", "seed", "max_tokens", "stop"}
        _params(params, sampling_keys | {"prompt", "prompt_ids", "add_special_tokens", "logprobs", "stream", "cancel_key"})
        if ("prompt" in params) == ("prompt_ids" in params):
            raise ValueError("pass exactly one of \"prompt\" (text) and \"prompt_ids\" (token ids)")
        if "prompt" in params:
            if not isinstance(params["prompt"], str):
                raise ValueError("\"prompt\" must be a string")
            add_special = params.get("add_special_tokens", True)
            if not isinstance(add_special, bool):
                raise ValueError("\"add_special_tokens\" must be true or false")
            prompt_ids = list(self.tokenizer(params["prompt"], add_special_tokens=add_special)["input_ids"])
        else:
            prompt_ids = params["prompt_ids"]
            vocab = self.model.get_output_embeddings()
            size = vocab.weight.shape[0] if vocab is not None else self.model.config.vocab_size
            if not isinstance(prompt_ids, list) or not all(
                isinstance(t, int) and not isinstance(t, bool) and 0 <= t < size for t in prompt_ids
            ):
                raise ValueError(f"\"prompt_ids\" must be a list of token ids from 0 to {size - 1}")
        top = params.get("logprobs")
        if top is not None and (not isinstance(top, int) or isinstance(top, bool) or top < 0):
            raise ValueError("\"logprobs\" must be null or a whole number >= 0")
        sampling = SamplingParams.from_dict({k: params[k] for k in sampling_keys if k in params})
        key = params.get("cancel_key")

        def on_delta(text: str, entries: list[dict[str, Any]]) -> None:
            emit({"type": "delta", "text": text, "logprobs": entries if top is not None else None})

        try:
            result = stream_completion(
                self.model,
                self.tokenizer,
                prompt_ids,
                sampling,
                top_logprobs=top,
                on_delta=on_delta if params.get("stream") else None,
                cancelled=(lambda: key in self.cancelled) if isinstance(key, str) else None,
            )
        finally:
            if isinstance(key, str):
                self.cancelled.discard(key)
        return result.to_dict()

    def cancel(self, params: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        # The reader thread already recorded the key when the line arrived; by now the completion it named has
        # stopped or finished. Forget the key so the set does not grow.
        _params(params, {"key"}, {"key"})
        self.cancelled.discard(params["key"])
        return {"ok": True}

    def run_job(self, params: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        from .jobs import run_job

        _params(params, {"job"}, {"job"})
        return run_job(params["job"], sink=emit)


def _error(exc: BaseException) -> dict[str, str]:
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


def _cancel_key(line: str) -> str | None:
    """The key of a `cancel` request line, else None (cheap for every other line)."""
    if '"cancel"' not in line:
        return None
    try:
        request = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(request, dict) or request.get("method") != "cancel":
        return None
    params = request.get("params")
    key = params.get("key") if isinstance(params, dict) else None
    return key if isinstance(key, str) else None


def _read_lines(stdin: TextIO, lines: queue.Queue[str], cancelled: set[str]) -> None:
    """Reader thread: queue every line for the main loop, noting cancel keys as soon as they arrive."""
    try:
        while True:
            line = stdin.readline()
            if not line:
                break
            key = _cancel_key(line)
            if key is not None:
                cancelled.add(key)
            lines.put(line)
    finally:
        lines.put("")  # EOF (or a read error): the main loop ends


def serve(stdin: TextIO, out: TextIO) -> int:
    """Answer requests from `stdin` on `out` until shutdown or EOF; returns the exit code."""
    cancelled: set[str] = set()
    worker = Worker(cancelled)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_read_lines, args=(stdin, lines, cancelled), daemon=True, name="stdin").start()

    def send(message: dict[str, Any]) -> None:
        out.write(dumps(message) + "\n")
        out.flush()

    while True:
        line = lines.get()
        if not line:
            return 0  # EOF: the client is gone
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except json.JSONDecodeError as exc:
            send({"id": None, "error": _error(ValueError(f"request is not valid JSON: {exc}"))})
            continue
        if not isinstance(request, dict):
            send({"id": None, "error": _error(ValueError("a request must be a JSON object"))})
            continue
        request_id = request.get("id")
        method = request.get("method")
        params = request.get("params", {})
        try:
            if method == "shutdown":
                send({"id": request_id, "result": {"ok": True}})
                return 0
            if not isinstance(method, str) or method not in worker.handlers:
                known = ", ".join([*worker.handlers, "shutdown"])
                raise ValueError(f"unknown method {method!r}; expected one of {known}")
            if not isinstance(params, dict):
                raise ValueError("\"params\" must be a JSON object")

            def emit(event: dict[str, Any]) -> None:
                send({"id": request_id, "event": event})

            result = worker.handlers[method](params, emit)
        except Exception as exc:  # noqa: BLE001 - every failure is reported, and the worker keeps serving
            send({"id": request_id, "error": _error(exc)})
            continue
        send({"id": request_id, "result": result})


def die_with_parent() -> None:
    """Ask Linux to send SIGTERM when the parent (the Distillery CLI) dies, even by SIGKILL: a worker left
    running would keep writing checkpoints into a run that a new attempt is resuming."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    except OSError:
        return
    if os.getppid() == 1:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def main() -> int:
    out = claim_stdout()
    # SIGTERM unwinds like Ctrl-C, so a job running inside the worker flushes its partial output.
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    die_with_parent()
    try:
        return serve(sys.stdin, out)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
