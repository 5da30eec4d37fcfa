"""Durable operations: steps with do / is-done / undo, a record written after every step, a Lease held
while the deployment is changed.

A run goes forward step by step. When a step fails (or the process is interrupted), the steps that did
something are undone in reverse order, and the record says `rolled-back`; when an undo fails too, the
record says `needs-person` with the commands to finish by hand (exit 3). A process killed outright leaves
the record at `running`: `--resume ID` carries it forward (a step that was running is asked `is_done`
first, so nothing is done twice), `--rollback ID` undoes what was done. Both work from any machine that
reaches the cluster, since the record lives in a ConfigMap. State that steps share (names, counts,
versions) lives in `record.state` so that a resumed run has it too; secrets never go there.

A step marked `commits` is the point of no return: once it is done, the new state is the goal, and a later
failure (Coder not scaling back up, say) is not undone but left to `--resume` or to the commands printed
(exit 3). An explicit `--rollback` still undoes everything.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from coderctl.errors import CoderctlError, ExitCode
from coderctl.ops.journal import Journal, Outcome, Step
from coderctl.ops.lock import OperationLock
from coderctl.ops.record import Record, StepState, holder_identity, new_id, now_iso
from coderctl.ops.recordstore import RecordConflict, RecordStore
from coderctl.ops.signals import Interrupted, interruptible, shielded
from coderctl.snapshot import snapshot

if TYPE_CHECKING:
    from coderctl.context import App


KILL_AFTER_STEP = "CODERCTL_FAULT_KILL_AFTER_STEP"
"""Fault injection for tests: SIGKILL this process right after the named step's record was written."""


@dataclass
class Run:
    """What a step function gets: the app, the shared state (persisted), its own output row, and the
    journal, where an undo that does several things adds a row for each."""

    app: App
    record: Record
    row: Step
    journal: Journal

    @property
    def state(self) -> dict[str, Any]:
        return self.record.state


StepFn = Callable[[Run], str | None]
DoneFn = Callable[[Run], bool]


@dataclass(frozen=True)
class Action:
    """One step. `do` returns its detail (or raises StepFailed); `is_done` tells from the world whether a
    step that was running when its process died had taken effect; `undo` is the way back, and `by_hand`
    what a person runs when the undo itself fails."""

    name: str
    plan: str
    do: StepFn
    is_done: DoneFn | None = None
    undo: StepFn | None = None
    by_hand: Callable[[Run], str] | None = None
    undo_row: str | None = ""
    """The output row of the undo: "" for "undo NAME", None when the undo adds its own rows (or none, when
    there was nothing to undo)."""
    commits: bool = False


COMMITTED = "committed"
"""Key in record.state: the operation passed its commit point."""


class OperationBlocked(CoderctlError):
    """Another operation is unfinished or holds the Lease: nothing was changed."""


def refuse_if_unfinished(store: RecordStore, *, allow: str = "") -> None:
    for rec in store.unfinished():
        if rec.id == allow:
            continue
        raise OperationBlocked(
            f"operation {rec.id} ({rec.kind}, by {rec.holder}, {rec.status} at step {rec.current}) is unfinished; "
            f"finish it first: coderctl {_command(rec.kind)} --resume {rec.id}, or undo it: "
            f"coderctl {_command(rec.kind)} --rollback {rec.id}")


def _command(kind: str) -> str:
    return {"restore": "backup restore"}.get(kind, kind)


class Executor:
    def __init__(self, app: App, kind: str, actions: list[Action], *, store: RecordStore | None = None,
                 lease_s: int = 60) -> None:
        self.app = app
        self.kind = kind
        self.actions = actions
        self.store = store or RecordStore(app.kube(), app.namespace)
        self.lease_s = lease_s
        self.journal = Journal()
        self.lock: OperationLock | None = None

    @property
    def rows(self) -> list[Step]:
        return self.journal.steps

    # -- entry points --------------------------------------------------------------------------------------

    def start(self, params: dict[str, Any], state: dict[str, Any] | None = None) -> tuple[Record, Outcome]:
        refuse_if_unfinished(self.store)
        record = Record(new_id(self.kind), self.kind, self.app.namespace, holder_identity(),
                        params=dict(params), state=dict(state or {}),
                        steps=[StepState(a.name) for a in self.actions])
        return record, self._locked(record, self._forward)

    def resume(self, op_id: str) -> tuple[Record, Outcome]:
        record = self._reopen(op_id)
        return record, self._locked(record, self._forward)

    def rollback(self, op_id: str) -> tuple[Record, Outcome]:
        record = self._reopen(op_id)
        return record, self._locked(record, lambda rec, lock: self._backward(rec, "rollback requested"))

    def _reopen(self, op_id: str) -> Record:
        record = self.store.load(op_id)
        if record.kind != self.kind:
            raise OperationBlocked(f"operation {op_id} is a {record.kind}, not a {self.kind}")
        if not record.unfinished:
            raise OperationBlocked(f"operation {op_id} is {record.status}: nothing to resume or roll back")
        refuse_if_unfinished(self.store, allow=op_id)
        record.holder = holder_identity()
        return record

    # -- running -------------------------------------------------------------------------------------------

    def _locked(self, record: Record, body: Callable[[Record, OperationLock], Outcome]) -> Outcome:
        lock = OperationLock(self.app.kube(), self.app.namespace, holder=record.holder, operation=record.id,
                             duration_s=self.lease_s)
        try:
            lock.acquire()
        except CoderctlError as exc:
            raise OperationBlocked(str(exc)) from None
        self.lock = lock
        try:
            record.status = "running"
            self.store.save(record)
            return body(record, lock)
        finally:
            lock.release()

    def _save(self, record: Record) -> None:
        with shielded():
            self.store.save(record)

    def _row(self, name: str) -> Step:
        row = Step(name)
        self.rows.append(row)
        return row

    def _run(self, record: Record, row: Step) -> Run:
        return Run(self.app, record, row, self.journal)

    def _forward(self, record: Record, lock: OperationLock) -> Outcome:
        try:
            with interruptible():
                for action in self.actions:
                    st = record.step(action.name)
                    if st.status in ("done", "skipped"):
                        self.rows.append(Step(action.name, "ok" if st.status == "done" else "skipped",
                                              st.detail + " (done before)"))
                        continue
                    if lock.lost:
                        return self._abandon(record, lock.lost_reason)
                    self._one(record, action, st)
        except RecordConflict as exc:
            return self._abandon(record, str(exc))
        except BaseException as exc:  # even a bug: put things back first
            if record.state.get(COMMITTED):
                return self._unfinished(record, _reason(self.app, exc))
            return self._backward(record, _reason(self.app, exc), exc)
        record.status = "done"
        record.message = ""
        self._save(record)
        return Outcome(int(ExitCode.OK), {"operation": record.id, "status": "ok"}, self.rows)

    def _abandon(self, record: Record, why: str) -> Outcome:
        """Another process took the operation over: stop here and leave the record and the way back to it."""
        message = f"{why}; stopped after step {record.current}, nothing undone: the process that took over " \
                  f"owns {record.id} now (coderctl {_command(self.kind)} --list)"
        return Outcome(int(ExitCode.PROBLEMS), {"operation": record.id, "status": "taken-over", "error": message},
                       self.rows, message)

    def _unfinished(self, record: Record, why: str) -> Outcome:
        """A failure after the commit point: the change stands; finishing it needs --resume or a person."""
        failed = next((a for a in self.actions if record.step(a.name).status in ("failed", "running")), None)
        todo = [failed.by_hand(self._run(record, Step(failed.name)))] if failed and failed.by_hand else []
        lines = [f"{self.kind} {record.id} made its change, but could not finish ({why}).", "Do this:",
                 *[f"  {i}. {t}" for i, t in enumerate(todo, 1)],
                 f"or finish it: coderctl {_command(self.kind)} --resume {record.id}"]
        record.status = "needs-person"
        record.message = self.app.redact("\n".join(lines))
        self._save(record)
        return Outcome(int(ExitCode.NEEDS_PERSON), {"operation": record.id, "status": "needs-person",
                                                    "error": record.message}, self.rows, record.message)

    def _world_changed(self) -> None:
        """A step or an undo ran (even half way): what the run's snapshot read before may be stale now."""
        snapshot(self.app).refresh()

    def _one(self, record: Record, action: Action, st: StepState) -> None:
        row = self._row(action.name)
        run = self._run(record, row)
        start = time.monotonic()
        try:
            if st.status == "running" and action.is_done is not None and action.is_done(run):
                row.status, row.detail = "ok", "had taken effect before the interruption"
            else:
                st.status, st.started_at = "running", now_iso()
                self._save(record)
                detail = action.do(run)
                if row.status == "running":
                    row.status = "ok"
                if detail is not None:
                    row.detail = detail
        except KeyboardInterrupt:
            row.status = "interrupted"
            raise
        except BaseException as exc:
            row.status, row.detail = "failed", _reason(self.app, exc)
            st.status, st.detail, st.finished_at = "failed", row.detail, now_iso()
            self._save(record)
            raise
        finally:
            row.duration_s = time.monotonic() - start
            self._world_changed()
        st.status = "skipped" if row.status == "skipped" else "done"
        st.detail, st.finished_at = self.app.redact(row.detail), now_iso()
        if action.commits:
            record.state[COMMITTED] = True
        self._save(record)
        if os.environ.get(KILL_AFTER_STEP) == action.name:
            os.kill(os.getpid(), signal.SIGKILL)

    def _backward(self, record: Record, why: str, exc: BaseException | None = None) -> Outcome:
        todo: list[str] = []
        undone = 0
        with shielded():
            for action in reversed(self.actions):
                st = record.step(action.name)
                if st.status not in ("done", "running", "failed", "undoing", "undo-failed") or action.undo is None:
                    continue
                undone += 1
                row = self._row(action.undo_row or f"undo {action.name}") if action.undo_row is not None \
                    else Step(f"undo {action.name}")
                run = self._run(record, row)
                st.status = "undoing"
                self.store.save(record)
                start = time.monotonic()
                try:
                    detail = action.undo(run)
                    row.status = "ok" if row.status == "running" else row.status
                    row.detail = detail or row.detail
                    st.status = "undone"
                except BaseException as undo_exc:  # noqa: BLE001 — every failed undo needs a person
                    row.status, row.detail = "failed", _reason(self.app, undo_exc)
                    st.status = "undo-failed"
                    todo.append(action.by_hand(run) if action.by_hand else f"{action.name}: {row.detail}")
                finally:
                    row.duration_s = time.monotonic() - start
                    st.finished_at = now_iso()
                    self._world_changed()
                    self.store.save(record)
            if todo:
                record.status = "needs-person"
                lines = [f"{self.kind} {record.id} failed ({why}) and coderctl could not put everything back.",
                         "Do this:", *[f"  {i}. {t}" for i, t in enumerate(todo, 1)],
                         f"then: coderctl {_command(self.kind)} --rollback {record.id}"]
                record.message = self.app.redact("\n".join(lines))
            else:
                record.status = "rolled-back" if undone else "failed"
                record.message = self.app.redact(why)
                record.state.pop(COMMITTED, None)
            self.store.save(record)
        code = ExitCode.NEEDS_PERSON if todo else ExitCode.PROBLEMS
        if exc is None and not todo:
            code = ExitCode.OK  # a requested rollback that put everything back
        elif isinstance(exc, CoderctlError) and not todo and exc.exit_code != ExitCode.PROBLEMS:
            code = exc.exit_code
        status = {ExitCode.OK: "rolled-back", ExitCode.NEEDS_PERSON: "needs-person"}.get(code, "failed")
        result = {"operation": record.id, "status": status}
        if why and exc is not None:
            result["error"] = record.message if todo else why
        return Outcome(int(code), result, self.rows, record.message)


def _reason(app: App, exc: BaseException) -> str:
    if isinstance(exc, Interrupted):
        return f"interrupted by {exc.name}"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, CoderctlError):
        return app.redact(str(exc))
    return app.redact(f"internal error: {type(exc).__name__}: {exc}")


def overview(app: App, kind: str) -> list[dict[str, Any]]:
    """Every record of `kind`, newest first, as `--list` shows them. `state` is the record's status, except
    that a `running` record whose Lease nobody holds for it any more is `interrupted` (its process died)."""
    from coderctl.clients.kube import LEASES
    from coderctl.clients.kube_lease import LeaseInfo
    from coderctl.ops.lock import LEASE_NAME, OPERATION_ANNOTATION

    lease = app.kube().get_or_none(LEASES, LEASE_NAME, app.namespace)
    info = LeaseInfo.of(lease) if lease else None
    out = []
    for rec in RecordStore(app.kube(), app.namespace).all(kind):
        live = bool(info and info.held() and info.annotations.get(OPERATION_ANNOTATION) == rec.id)
        state = "interrupted" if rec.status == "running" and not live else rec.status
        out.append({**rec.summary(), "state": state, "started_at": rec.created_at,
                    "holds_lease": live})
    return out
