"""Job mode: `python -m distillery_engine.jobs JOB.json`.

A job writes `events.jsonl` and its artifacts into its `output_dir`. Exit code 0 = done, 1 = failed (the last
event is `error`), 130 = interrupted (Ctrl-C or SIGTERM; partial output is flushed, re-running resumes).

`run_job` owns the `start`, `done` and `error` events; a job's own `run(spec, events)` emits progress, log and
checkpoint events and returns the fields of its `done` event.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .events import EventLog, EventSink

JobRunner = Callable[[dict[str, Any], EventLog], dict[str, Any]]
JOB_TYPES = ("onpolicy", "sample", "train")


def _runner(job_type: str) -> JobRunner:
    # Imported on demand: a sample job should not pay for (or break on) the training code, and vice versa.
    if job_type == "onpolicy":
        from .onpolicy import run
    elif job_type == "sample":
        from .sample_job import run
    elif job_type == "train":
        from .train import run
    else:
        raise ValueError(f"unknown job type {job_type!r}; expected one of {', '.join(JOB_TYPES)}")
    return run


def run_job(spec: dict[str, Any], sink: EventSink | None = None) -> dict[str, Any]:
    """Run a job in this process and return its `done` event. Events also go to `sink` when given.

    Failures are recorded as an `error` event and re-raised; an interruption is recorded as a `log` event and
    re-raised as KeyboardInterrupt.
    """
    if not isinstance(spec, dict):
        raise ValueError("a job must be a JSON object")
    output_dir = spec.get("output_dir")
    if not isinstance(output_dir, str) or not output_dir:
        raise ValueError('a job needs "output_dir" (a folder path)')
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    with EventLog(Path(output_dir) / "events.jsonl", sink) as events:
        events.emit("start", job=spec.get("type"), pid=os.getpid())
        try:
            if not isinstance(spec.get("type"), str):
                raise ValueError(f'a job needs "type", one of {", ".join(JOB_TYPES)}')
            summary = _runner(spec["type"])(spec, events)
        except KeyboardInterrupt:
            events.emit("log", level="warning", message="interrupted; run the same job again to resume")
            raise
        except Exception as exc:
            events.emit("error", error_type=type(exc).__name__, message=str(exc), traceback=traceback.format_exc())
            raise
        return events.emit("done", **summary)


def load_job(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    try:
        spec = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"job file not found: {p}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{p} is not valid JSON: {exc}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"{p} must hold a JSON object")
    return spec


def raise_keyboard_interrupt(signum: int, frame: object) -> None:
    """SIGTERM handler: unwind like Ctrl-C, so `finally` blocks and flushes run before the process exits."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distillery_engine.jobs", description=__doc__.split("\n")[0])
    parser.add_argument("job", help="job spec (JSON file)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    try:
        run_job(load_job(args.job))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()  # the same traceback is in events.jsonl when output_dir was usable
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
