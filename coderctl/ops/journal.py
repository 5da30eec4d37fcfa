"""The steps an operation took, and its outcome: what `-o json` reports as `{"result", "steps"}`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from coderctl.errors import CoderctlError, ExitCode


class StepFailed(CoderctlError):
    """A step failed; the message says what happened (secret values already redacted)."""


@dataclass
class Step:
    name: str
    status: str = "running"  # ok | failed | skipped | warn | interrupted | running
    detail: str = ""
    duration_s: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "status": self.status, "detail": self.detail,
                               "duration_s": round(self.duration_s, 3)}
        if self.data:
            out["data"] = self.data
        return out


@dataclass
class Outcome:
    """The end of an operation: exit code, result for the envelope, and a one-line message on failure."""

    code: int
    result: dict[str, Any]
    steps: list[Step]
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.code == ExitCode.OK


class Journal:
    """Records steps in order; `step()` times one and marks it ok, or failed when it raises."""

    def __init__(self) -> None:
        self.steps: list[Step] = []

    @contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[Step]:
        step = Step(name, detail=detail)
        self.steps.append(step)
        start = time.monotonic()
        try:
            yield step
        except KeyboardInterrupt:
            step.status = "interrupted"
            raise
        except BaseException as exc:
            step.status = "failed"
            step.detail = str(exc) or type(exc).__name__
            raise
        else:
            if step.status == "running":
                step.status = "ok"
        finally:
            step.duration_s = time.monotonic() - start

    def note(self, name: str, status: str, detail: str = "", **data: Any) -> Step:
        """A step that is only a record (skipped, or decided without work)."""
        step = Step(name, status, detail, data=dict(data))
        self.steps.append(step)
        return step

    def find(self, name: str) -> Step | None:
        return next((s for s in reversed(self.steps) if s.name == name), None)
