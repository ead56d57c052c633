"""When each phase of the rehearsal and each step of the migration ran: the report's timeline, and
what the slowest writes are matched against."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from villager_shop.migration import state
from villager_shop.migration.context import Reporter
from villager_shop.migration.plan import build_plan
from villager_shop.migration.steps.base import Step
from villager_shop.safety.report.model import Span, StepResult

# Where the rehearsal tells a person what it is doing.
Say = Callable[[str], None]


def quiet(_: str) -> None:
    return None


class Timeline:
    """Wraps the caller's migration reporter and records when each step started and finished."""

    def __init__(self, inner: Reporter) -> None:
        self.inner = inner
        self.spans: dict[str, Span] = {}
        self.notes: list[str] = []

    def step_started(self, name: str, title: str) -> None:
        now = time.time()
        self.spans[name] = Span(name, now, now, "running")
        self.inner.step_started(name, title)

    def step_finished(self, name: str, detail: dict[str, Any]) -> None:
        span = self.spans.get(name)
        if span is not None:
            span.end, span.status = time.time(), "done"
        self.inner.step_finished(name, detail)

    def progress(self, name: str, done: int, total: int | None, rate: float) -> None:
        self.inner.progress(name, done, total, rate)

    def note(self, message: str) -> None:
        self.notes.append(message)
        self.inner.note(message)

    def close_running(self) -> None:
        for span in self.spans.values():
            if span.status == "running":
                span.end, span.status = time.time(), "failed"


@contextlib.contextmanager
def phase(phases: list[Span], name: str, say: Say) -> Iterator[Span]:
    say(f"{name} …")
    span = Span(name, time.time(), time.time(), "running")
    phases.append(span)
    try:
        yield span
    except BaseException:
        span.end, span.status = time.time(), "failed"
        raise
    span.end = time.time()
    if span.status == "running":
        span.status = "done"



def step_results(rows: dict[str, state.StepRow], timeline: Timeline, steps: list[Step] | None = None) -> list[StepResult]:
    """Every step of the plan (`steps`, else the built-in plan's) as it ended on staging: its state
    row when it has one, else what the timeline saw (a step that failed before writing its row),
    else pending."""
    out: list[StepResult] = []
    for step in steps if steps is not None else build_plan():
        r = rows.get(step.name)
        span = timeline.spans.get(step.name)
        detail = dict(r.detail) if r else {}
        status = r.status if r else ("failed" if span and span.status == "failed" else "pending")
        seconds = detail.get("seconds")
        if seconds is None and span is not None:
            seconds = round(span.seconds, 3)
        attempts = int(detail.get("attempts") or 0)
        statements = int(detail.get("statements") or (1 if attempts else 0))
        out.append(StepResult(
            name=step.name, title=step.title, phase=step.phase, status=status,
            seconds=None if seconds is None else float(seconds),
            start=span.start if span else None, end=span.end if span else None,
            attempts=attempts, lock_retries=max(0, attempts - statements),
            error=r.last_error if r else None, detail=detail, table=getattr(step, "table", None),
        ))
    return out
