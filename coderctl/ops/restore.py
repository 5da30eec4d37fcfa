"""`backup restore FILE`: check -> target -> confirm -> safety backup -> scale Coder to 0 -> restore (one
transaction) -> row counts -> scale Coder back.

The way back: a failed restore rolls back by itself (single transaction) and is confirmed by row counts
against the safety backup's manifest; a restore whose row counts are wrong is replaced by the safety
backup; Coder is always put back to its replica count. What cannot be put back ends in exit 3 with the
exact commands.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coderctl import discovery
from coderctl.clients.kube import DEPLOYMENTS, PODS
from coderctl.clients.kube_exec import ExecStreamBroken
from coderctl.clients.postgres import DatabaseURL, split_address
from coderctl.context import App
from coderctl.errors import CoderctlError, ExitCode
from coderctl.ops import backup, pgtools, pod, tables
from coderctl.ops import manifest as mf
from coderctl.ops.files import READ_CHUNK
from coderctl.ops.journal import Journal, Outcome, StepFailed
from coderctl.ops.signals import Interrupted, interruptible, shielded
from coderctl.ops.verifier import read_file

Confirm = Callable[[str, str], bool]
"""Called with what is about to happen and the word to type; returns whether to go on."""
Progress = Callable[[int], None]


@dataclass
class RestoreOptions:
    file: Path
    output_dir: Path
    via: str = "exec"
    safety_backup: bool = True
    db_address: str | None = None
    wait_s: float = 300.0
    poll_s: float = 1.0


class NeedsPerson(CoderctlError):
    exit_code = ExitCode.NEEDS_PERSON


@dataclass
class _Database:
    """Where the restore goes, and how to reach it."""

    url: DatabaseURL
    via: str
    target: pod.Target | None = None
    host: str = ""
    port: int = 0

    def describe(self) -> str:
        if self.target is not None:
            return self.target.describe()
        return f"database {self.url.database} as {self.url.user} at {self.host}:{self.port}"

    def counts(self, app: App) -> dict[str, int]:
        if self.target is not None:
            return tables.count_exec(app, self.target)
        return tables.count_direct(app, self.url, self.host, self.port)


@dataclass
class _State:
    """What has been changed so far: the journal's memory for the way back."""

    replicas: int = 0
    scaled_down: bool = False
    restore_started: bool = False  # from the restore until its row counts are checked
    safety: Path | None = None
    safety_tables: dict[str, int] | None = None


def restore(app: App, opts: RestoreOptions, confirm: Confirm, progress: Progress | None = None,
            journal: Journal | None = None) -> Outcome:
    journal = journal or Journal()
    start = time.monotonic()
    state = _State()
    result: dict[str, Any] = {"file": str(opts.file)}
    code, message = int(ExitCode.OK), ""
    try:
        with interruptible():
            result.update(_forward(app, opts, confirm, progress, journal, state))
    except BaseException as exc:  # whatever went wrong, even a bug: put things back first
        message = _reason(app, exc)
        code = int(exc.exit_code) if isinstance(exc, CoderctlError) else int(ExitCode.PROBLEMS)
        with shielded():
            back_code, back_message = _way_back(app, opts, journal, state, message)
        if back_code:
            code, message = back_code, back_message
        elif app.debug and not isinstance(exc, (CoderctlError, KeyboardInterrupt)):
            raise
    result["status"] = {ExitCode.OK: "ok", ExitCode.NEEDS_PERSON: "needs-person"}.get(ExitCode(code), "failed")
    if state.safety is not None:
        result["safety_backup"] = str(state.safety)
    if message:
        result["error"] = message
    result["duration_s"] = round(time.monotonic() - start, 3)
    return Outcome(int(code), result, journal.steps, message)


def _reason(app: App, exc: BaseException) -> str:
    if isinstance(exc, Interrupted):
        return f"interrupted by {exc.name}"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if not isinstance(exc, CoderctlError):
        return app.redact(f"internal error: {type(exc).__name__}: {exc}")
    return app.redact(str(exc))


def _forward(app: App, opts: RestoreOptions, confirm: Confirm, progress: Progress | None, journal: Journal,
             state: _State) -> dict[str, Any]:
    with journal.step("check") as step:
        record = mf.read(opts.file)
        full = read_file(opts.file, record.format)
        if full.size != record.size or full.sha256 != record.sha256:
            raise StepFailed("the file does not match its manifest (size or SHA-256): it was changed or damaged")
        if not full.ok:
            raise StepFailed(full.error)
        step.detail = f"{opts.file.name}: checksum matches, read back in full ({len(record.tables or {})} tables)"
    with journal.step("target") as step:
        db = _database(app, opts)
        deployment = app.kube().get(DEPLOYMENTS, app.settings.coder_deployment, app.namespace)
        state.replicas = int((deployment.get("spec") or {}).get("replicas", 1))
        step.detail = f"{db.describe()}; Coder deployment {app.namespace}/{app.settings.coder_deployment} " \
                      f"has {state.replicas} replica(s)"
    with journal.step("confirm") as step:
        text = (f"Restore {opts.file.name} (taken {record.created_at}, {len(record.tables or {})} tables) into "
                f"{db.describe()}, replacing what it holds. Coder ({app.namespace}/{app.settings.coder_deployment}) "
                f"is scaled from {state.replicas} to 0 meanwhile.")
        if not confirm(text, db.url.database):
            raise StepFailed("not confirmed; nothing was changed")
        step.detail = "confirmed"
    if opts.safety_backup:
        with journal.step("safety-backup") as step:
            outcome = backup.create(app, backup.CreateOptions(
                output_dir=opts.output_dir, via=opts.via, fmt="custom", db_address=opts.db_address,
                tag="pre-restore"))
            if not outcome.ok:
                raise StepFailed(f"safety backup failed, nothing was changed: {outcome.message}")
            state.safety = Path(outcome.result["file"])
            state.safety_tables = mf.read(state.safety).tables
            step.detail = str(state.safety)
    else:
        journal.note("safety-backup", "skipped", "--no-safety-backup")
    with journal.step("scale-down") as step:
        if state.replicas > 0:
            _scale_down(app, opts, state)
            step.detail = f"Coder scaled from {state.replicas} to 0, no pods left"
        else:
            step.status, step.detail = "skipped", "Coder already has 0 replicas"
    with journal.step("restore") as step:
        state.restore_started = True
        _restore_into(app, db, opts.file, record, progress)
        step.detail = f"{record.size} bytes restored in one transaction"
    with journal.step("row-counts") as step:
        diffs = tables.differences(record.tables or {}, db.counts(app))
        if diffs:
            raise StepFailed(f"restored row counts differ from the manifest: {tables.summary(diffs)}")
        step.detail = f"{len(record.tables or {})} tables match the manifest" if record.tables is not None \
            else "the manifest has no row counts (made with --no-verify)"
        state.restore_started = False  # the restore is done and checked: nothing to undo in the database
    _scale_back(app, opts, journal, state)
    return {"database": db.url.database, "target": db.describe(), "replicas": state.replicas,
            "tables": len(record.tables or {}), "rows": sum((record.tables or {}).values())}


def _database(app: App, opts: RestoreOptions) -> _Database:
    url = DatabaseURL.parse(discovery.database_url(app))
    app.redact.add(url.password)
    if opts.via == "exec":
        return _Database(url, "exec", target=pod.target(app, url))
    host, port = split_address(opts.db_address, url)
    return _Database(url, "direct", host=host, port=port)


def _file_chunks(path: Path, progress: Progress | None) -> Iterator[bytes]:
    sent = 0
    with open(path, "rb", buffering=0) as fh:
        while chunk := fh.read(READ_CHUNK):
            sent += len(chunk)
            yield chunk
            if progress is not None:
                progress(sent)


def _restore_into(app: App, db: _Database, path: Path, record: mf.Manifest, progress: Progress | None) -> None:
    if db.target is not None:
        output = bytearray()
        try:
            result = pod.run(app, db.target, pod.RESTORE, record.format, str(record.size),
                             stdout=lambda b: output.extend(b[: max(0, 65536 - len(output))]),
                             stdin=_file_chunks(path, progress))
        except ExecStreamBroken as exc:
            raise StepFailed(str(exc)) from None
        if not result.ok:
            raise StepFailed(f"restore in {db.target.namespace}/{db.target.pod} failed (exit {result.exit_code}), "
                             f"rolled back: {app.redact(pod.error_line(result))}")
        return
    env = pgtools.libpq_env(db.url, host=db.host, port=db.port, connect_timeout=app.timeout)
    reason = pgtools.restore_archive(str(path), record.format, database=db.url.database, env=env,
                                     flags=("--clean", "--if-exists"), why="to restore")
    if reason is not None:
        raise StepFailed(app.redact(f"restore failed, rolled back: {reason}"))


# -- Coder's replicas --------------------------------------------------------------------------------------

def _scale(app: App, replicas: int) -> None:
    app.kube().patch(DEPLOYMENTS, app.settings.coder_deployment, app.namespace, {"spec": {"replicas": replicas}})


def _scale_down(app: App, opts: RestoreOptions, state: _State) -> None:
    try:
        _scale(app, 0)
    except BaseException:
        try:  # a failed request may still have been applied
            dep = app.kube().get(DEPLOYMENTS, app.settings.coder_deployment, app.namespace)
            state.scaled_down = int((dep.get("spec") or {}).get("replicas", 1)) != state.replicas
        except (CoderctlError, OSError):
            state.scaled_down = True
        raise
    state.scaled_down = True
    _wait(app, opts, 0)


def _selector(app: App) -> str:
    dep = app.kube().get(DEPLOYMENTS, app.settings.coder_deployment, app.namespace)
    labels = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _wait(app: App, opts: RestoreOptions, replicas: int) -> bool:
    """Until no Coder pod is left (0), or `replicas` are ready; False after opts.wait_s."""
    deadline = time.monotonic() + opts.wait_s
    selector = _selector(app) if replicas == 0 else ""
    while True:
        if replicas == 0:
            if not app.kube().list(PODS, app.namespace, label_selector=selector):
                return True
        else:
            dep = app.kube().get(DEPLOYMENTS, app.settings.coder_deployment, app.namespace)
            if int((dep.get("status") or {}).get("readyReplicas") or 0) >= replicas:
                return True
        if time.monotonic() >= deadline:
            if replicas == 0:
                raise StepFailed(f"Coder pods still running {opts.wait_s:g}s after scaling to 0")
            return False
        time.sleep(opts.poll_s)


def _scale_back(app: App, opts: RestoreOptions, journal: Journal, state: _State) -> None:
    with journal.step("scale-up") as step:
        if not state.scaled_down:
            step.status, step.detail = "skipped", "Coder was not scaled down"
            return
        _scale(app, state.replicas)
        state.scaled_down = False
        if _wait(app, opts, state.replicas):
            step.detail = f"Coder back to {state.replicas} replica(s), ready"
        else:
            step.status = "warn"
            step.detail = (f"Coder back to {state.replicas} replica(s) but not ready after {opts.wait_s:g}s: "
                           f"kubectl -n {app.namespace} get pods")


# -- the way back ------------------------------------------------------------------------------------------

def _way_back(app: App, opts: RestoreOptions, journal: Journal, state: _State, why: str) -> tuple[int, str]:
    """Undo what the forward path changed. Returns (0, "") when the failure's own exit code stands, or
    (3, steps) when a person is needed."""
    todo: list[str] = []
    database_problem = ""
    if state.restore_started:
        database_problem = _database_back(app, opts, journal, state, todo)
    if state.scaled_down:
        try:
            _scale_back(app, opts, journal, state)
        except (CoderctlError, OSError) as exc:
            todo.append(f"kubectl -n {app.namespace} scale deployment/{app.settings.coder_deployment} "
                        f"--replicas={state.replicas}   # scaling Coder back failed: {app.redact(str(exc))}")
    if not todo:
        return 0, ""
    lines = [f"restore failed ({why}) and coderctl could not put everything back."]
    if database_problem:
        lines.append(database_problem)
    lines.append("Do this:")
    lines += [f"  {i}. {t}" for i, t in enumerate(todo, 1)]
    return int(ExitCode.NEEDS_PERSON), "\n".join(lines)


def _database_back(app: App, opts: RestoreOptions, journal: Journal, state: _State, todo: list[str]) -> str:
    """After a failed restore: is the database as before? If not, restore the safety backup."""
    try:
        db = _database(app, opts)
    except (CoderctlError, OSError) as exc:
        todo.append(f"check the database: it could not be reached ({app.redact(str(exc))})")
        return "The database's state is unknown."
    if state.safety_tables is not None:
        with journal.step("check-unchanged") as step:
            try:
                diffs = tables.differences(state.safety_tables, db.counts(app))
            except (CoderctlError, OSError) as exc:
                diffs = [f"row counts unavailable: {app.redact(str(exc))}"]
            if not diffs:
                step.detail = "row counts equal the safety backup's: the database is as it was"
                return ""
            step.status = "warn"
            step.detail = f"the database differs from the safety backup: {tables.summary(diffs)}"
    if state.safety is None:
        todo.append(f"check the database: the restore of {opts.file} may be partial and there is no safety "
                    f"backup; restore a known good backup: coderctl backup restore FILE --yes")
        if state.scaled_down:
            todo.append(f"then kubectl -n {app.namespace} scale deployment/{app.settings.coder_deployment} "
                        f"--replicas={state.replicas}")
        return "The database may hold a partial or wrong restore."
    with journal.step("restore-safety-backup") as step:
        try:
            record = mf.read(state.safety)
            _restore_into(app, db, state.safety, record, None)
            diffs = tables.differences(record.tables or {}, db.counts(app))
            if diffs:
                raise StepFailed(f"row counts differ after restoring the safety backup: {tables.summary(diffs)}")
            step.detail = f"{state.safety.name} restored; row counts match"
            return ""
        except (CoderctlError, OSError) as exc:
            step.status, step.detail = "failed", app.redact(str(exc))
    todo.append(f"restore the safety backup: coderctl -n {app.namespace} backup restore {state.safety} --yes "
                f"--no-safety-backup --via {opts.via}")
    return f"The database may hold a partial or wrong restore; the safety backup is {state.safety}."
