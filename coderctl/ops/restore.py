"""`backup restore FILE` as a durable operation: check -> target -> confirm -> safety backup -> scale Coder
to 0 -> restore (one transaction) -> row counts (the commit point) -> scale Coder back.

The way back: a failed restore rolls back by itself (single transaction) and is confirmed by row counts
against the safety backup's manifest; a restore whose row counts are wrong is replaced by the safety
backup; Coder is put back to the replica count recorded before it was scaled down — read from the record,
never from the cluster, which shows 0 by then. Each step's state is recorded (ops/operation.py), so a
restore killed at any point is found by `--list` and finished with `--resume ID` or undone with
`--rollback ID`, from any machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from coderctl import discovery
from coderctl.clients.kube import DEPLOYMENTS, PODS
from coderctl.clients.kube_exec import ExecStreamBroken
from coderctl.clients.postgres import DatabaseURL, split_address
from coderctl.clients.rollout import RolloutError, wait_for_rollout
from coderctl.context import App
from coderctl.database.messages import first_error
from coderctl.database.pod import restore_role_option
from coderctl.database.roles import database_owner, database_owner_direct
from coderctl.errors import CoderctlError
from coderctl.ops import archive, backup, pgtools, pod, tables
from coderctl.ops import manifest as mf
from coderctl.ops.files import READ_CHUNK
from coderctl.ops.journal import Outcome, StepFailed
from coderctl.ops.operation import Action, Executor, Run
from coderctl.ops.verifier import read_file

KIND = "restore"

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

    def params(self) -> dict[str, Any]:
        """For the record: names and paths only (a --database-url is never recorded; pass it again)."""
        out = asdict(self)
        out["file"], out["output_dir"] = str(self.file.resolve()), str(self.output_dir.resolve())
        return out

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> RestoreOptions:
        return cls(**{**params, "file": Path(params["file"]), "output_dir": Path(params["output_dir"])})


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

    def owner(self, app: App) -> str:
        """The database's owner, asked as the URL's user: what is restored is to be owned by it."""
        import psycopg

        try:
            if self.target is not None:
                return database_owner(app, self.target)
            return database_owner_direct(app, self.url, self.host, self.port)
        except (CoderctlError, psycopg.Error) as exc:
            raise StepFailed(app.redact(f"cannot read the owner of database {self.url.database}: "
                                        f"{first_error(str(exc), type(exc).__name__)}")) from None


def restore(app: App, opts: RestoreOptions, confirm: Confirm, progress: Progress | None = None) -> Outcome:
    """A new restore of opts.file."""
    return _finish(opts, *_Restore(app, opts, confirm, progress).executor().start(opts.params()))


def resume(app: App, op_id: str, confirm: Confirm, progress: Progress | None = None) -> Outcome:
    """Carry an unfinished restore forward from where it stopped."""
    record = _reopen_options(app, op_id)
    return _finish(record, *_Restore(app, record, confirm, progress).executor().resume(op_id))


def rollback(app: App, op_id: str) -> Outcome:
    """Undo what an unfinished restore did, in reverse order."""
    record = _reopen_options(app, op_id)
    return _finish(record, *_Restore(app, record, lambda text, word: True, None).executor().rollback(op_id))


def _reopen_options(app: App, op_id: str) -> RestoreOptions:
    from coderctl.ops.recordstore import RecordStore

    return RestoreOptions.from_params(RecordStore(app.kube(), app.namespace).load(op_id).params)


def _finish(opts: RestoreOptions, record: Any, outcome: Outcome) -> Outcome:
    state = record.state
    result: dict[str, Any] = {"file": str(opts.file), **outcome.result}
    if outcome.ok and result.get("status") == "ok":
        result.update({k: state[k] for k in ("database", "target", "replicas", "tables", "rows") if k in state})
    if state.get("safety"):
        result["safety_backup"] = state["safety"]
    outcome.result = result
    return outcome


class _Restore:
    def __init__(self, app: App, opts: RestoreOptions, confirm: Confirm, progress: Progress | None) -> None:
        self.app = app
        self.opts = opts
        self.confirm_fn = confirm
        self.progress = progress
        self._db: _Database | None = None

    @property
    def deployment(self) -> str:
        return f"{self.app.namespace}/{self.app.settings.coder_deployment}"

    def executor(self) -> Executor:
        return Executor(self.app, KIND, [
            Action("check", f"check {self.opts.file.name} against its manifest and read it in full", self.check),
            Action("target", "find the database and Coder's replica count", self.target),
            Action("confirm", "ask for confirmation naming the database", self.confirm),
            Action("safety-backup", f"back up the current database into {self.opts.output_dir}", self.safety),
            Action("scale-down", f"scale deployment {self.deployment} to 0 and wait for its pods to go",
                   self.scale_down, is_done=self.scaled_down, undo=self.scale_back, undo_row=None,
                   by_hand=self.scale_back_by_hand),
            Action("restore", "restore the file in one transaction", self.restore, is_done=self.restored,
                   undo=self.put_database_back, undo_row=None, by_hand=self.database_by_hand),
            Action("row-counts", "compare every table's row count with the manifest", self.row_counts,
                   commits=True),
            Action("scale-up", f"scale deployment {self.deployment} back and wait for the rollout", self.scale_up,
                   is_done=self.scaled_up, by_hand=self.scale_back_by_hand),
        ])

    # -- forward -------------------------------------------------------------------------------------------

    def check(self, run: Run) -> str:
        record = mf.read(self.opts.file)
        full = read_file(self.opts.file, record.format)
        if full.size != record.size or full.sha256 != record.sha256:
            raise StepFailed("the file does not match its manifest (size or SHA-256): it was changed or damaged")
        if not full.ok:
            raise StepFailed(full.error)
        run.state["created_at"] = record.created_at
        done = f"{self.opts.file.name}: checksum matches, read back in full ({len(record.tables or {})} tables)"
        if self.opts.via == "direct" and record.format == "custom":
            done += f"; {self._local_pg_restore(record)}"
        return done

    def _local_pg_restore(self, record: mf.Manifest) -> str:
        """The local pg_restore reads this archive, checked before anything changes: one that does not (an
        archive of a newer pg_dump, a compression its build lacks) would fail only once Coder is down."""
        try:
            tool = pgtools.reader_for(str(self.opts.file), record.pg_dump_version, why="to restore")
        except pgtools.ToolMissing as exc:
            raise StepFailed(f"{exc}, or restore --via exec; nothing was changed") from None
        return f"{tool.path} {tool.version} reads it"

    def target(self, run: Run) -> str:
        db = self.database()
        dep = self.app.kube().get(DEPLOYMENTS, self.app.settings.coder_deployment, self.app.namespace)
        run.state["replicas"] = int((dep.get("spec") or {}).get("replicas", 1))
        run.state["database"], run.state["target"] = db.url.database, db.describe()
        done = f"{db.describe()}; Coder deployment {self.deployment} has {run.state['replicas']} replica(s)"
        record = mf.read(self.opts.file)
        if db.target is not None and record.format == "custom":
            done += f"; {self._pods_pg_restore(db.target, record)}"
        return done

    def _pods_pg_restore(self, t: pod.Target, record: mf.Manifest) -> str:
        """The pod's pg_restore reads this archive (`pg_restore -l` on its header and table of contents, sent on
        stdin), asked before anything changes: a backup of a newer server, or in a compression the pod's build
        lacks, would fail only once Coder is down."""
        length = archive.toc_length(str(self.opts.file))
        if length is None:
            return "the pod's pg_restore not asked beforehand (an archive version coderctl does not read)"
        with open(self.opts.file, "rb") as fh:
            head = fh.read(length)
        try:
            result = pod.run(self.app, t, pod.READABLE, str(length), stdout=lambda b: None, stdin=[head])
        except ExecStreamBroken as exc:
            raise StepFailed(str(exc)) from None
        if not result.ok:
            made = f" (made by pg_dump {record.pg_dump_version})" if record.pg_dump_version else ""
            raise StepFailed(self.app.redact(
                f"pg_restore in {t.namespace}/{t.pod} cannot read {self.opts.file.name}{made}: "
                f"{pod.error_line(result)}; nothing was changed"))
        return "the pod's pg_restore reads it"

    def confirm(self, run: Run) -> str:
        record = mf.read(self.opts.file)
        text = (f"Restore {self.opts.file.name} (taken {record.created_at}, {len(record.tables or {})} tables) into "
                f"{run.state['target']}, replacing what it holds. Coder ({self.deployment}) is scaled from "
                f"{run.state['replicas']} to 0 meanwhile.")
        if not self.confirm_fn(text, run.state["database"]):
            raise StepFailed("not confirmed; nothing was changed")
        return "confirmed"

    def safety(self, run: Run) -> str:
        if not self.opts.safety_backup:
            run.row.status = "skipped"
            return "--no-safety-backup"
        outcome = backup.create(self.app, backup.CreateOptions(
            output_dir=self.opts.output_dir, via=self.opts.via, fmt="custom", db_address=self.opts.db_address,
            tag="pre-restore"))
        if not outcome.ok:
            raise StepFailed(f"safety backup failed, nothing was changed: {outcome.message}")
        safety = Path(outcome.result["file"])
        run.state["safety"] = str(safety)
        run.state["safety_tables"] = mf.read(safety).tables
        return str(safety)

    def scale_down(self, run: Run) -> str:
        if run.state["replicas"] == 0:
            run.row.status = "skipped"
            return "Coder already has 0 replicas"
        self._scale(0)
        self._wait_no_pods()
        return f"Coder scaled from {run.state['replicas']} to 0, no pods left"

    def scaled_down(self, run: Run) -> bool:
        return self._replicas() == 0 and not self._pods()

    def restore(self, run: Run) -> str:
        record = mf.read(self.opts.file)
        if not run.state.get("owner"):
            run.state["owner"] = self.database().owner(self.app)
        _restore_into(self.app, self.database(), self.opts.file, record, self.progress, run.state["owner"])
        return f"{record.size} bytes restored in one transaction, acting as {run.state['owner']}"

    def restored(self, run: Run) -> bool:
        record = mf.read(self.opts.file)
        try:
            return record.tables is not None and not tables.differences(record.tables, self.database().counts(self.app))
        except (CoderctlError, OSError):
            return False

    def row_counts(self, run: Run) -> str:
        record = mf.read(self.opts.file)
        diffs = tables.differences(record.tables or {}, self.database().counts(self.app))
        if diffs:
            raise StepFailed(f"restored row counts differ from the manifest: {tables.summary(diffs)}")
        run.state["tables"] = len(record.tables or {})
        run.state["rows"] = sum((record.tables or {}).values())
        if record.tables is None:
            return "the manifest has no row counts (made with --no-verify)"
        return f"{len(record.tables)} tables match the manifest"

    def scale_up(self, run: Run) -> str:
        if run.record.step("scale-down").status == "skipped":
            run.row.status = "skipped"
            return "Coder was not scaled down"
        detail = self._scale_to(int(run.state["replicas"]))
        if "not ready" in detail:
            run.row.status = "warn"
        return detail

    def scaled_up(self, run: Run) -> bool:
        return self._replicas() == int(run.state["replicas"]) and self._rolled_out(time.monotonic())

    # -- the way back --------------------------------------------------------------------------------------

    def scale_back(self, run: Run) -> str | None:
        replicas = int(run.state.get("replicas", 0))
        if replicas == 0 or self._replicas() == replicas:
            return None
        with run.journal.step("scale-up") as step:
            detail = self._scale_to(replicas)
            step.status, step.detail = ("warn" if "not ready" in detail else "ok"), detail
        return detail

    def scale_back_by_hand(self, run: Run) -> str:
        return (f"kubectl -n {self.app.namespace} scale deployment/{self.app.settings.coder_deployment} "
                f"--replicas={run.state.get('replicas', 1)}   # scaling Coder back failed")

    def put_database_back(self, run: Run) -> str | None:
        """After a failed restore: is the database as before? If not, restore the safety backup."""
        db = self.database()
        safety_tables = run.state.get("safety_tables")
        if safety_tables is not None:
            with run.journal.step("check-unchanged") as step:
                try:
                    diffs = tables.differences(safety_tables, db.counts(self.app))
                except (CoderctlError, OSError) as exc:
                    diffs = [f"row counts unavailable: {self.app.redact(str(exc))}"]
                if not diffs:
                    step.detail = "row counts equal the safety backup's: the database is as it was"
                    return step.detail
                step.status = "warn"
                step.detail = f"the database differs from the safety backup: {tables.summary(diffs)}"
        if not run.state.get("safety"):
            raise StepFailed(f"the restore of {self.opts.file} may be partial and there is no safety backup")
        safety = Path(run.state["safety"])
        with run.journal.step("restore-safety-backup") as step:
            record = mf.read(safety)
            _restore_into(self.app, db, safety, record, None, run.state.get("owner"))
            diffs = tables.differences(record.tables or {}, db.counts(self.app))
            if diffs:
                raise StepFailed(f"row counts differ after restoring the safety backup: {tables.summary(diffs)}")
            step.detail = f"{safety.name} restored; row counts match"
            return step.detail

    def database_by_hand(self, run: Run) -> str:
        if not run.state.get("safety"):
            return ("check the database: the restore may be partial and there is no safety backup; restore a "
                    "known good backup: coderctl backup restore FILE --yes")
        return (f"restore the safety backup: coderctl -n {self.app.namespace} backup restore {run.state['safety']} "
                f"--yes --no-safety-backup --via {self.opts.via}")

    # -- helpers -------------------------------------------------------------------------------------------

    def database(self) -> _Database:
        if self._db is None:
            url = DatabaseURL.parse(discovery.database_url(self.app))
            self.app.redact.add(url.password)
            if self.opts.via == "exec":
                self._db = _Database(url, "exec", target=pod.target(self.app, url))
            else:
                host, port = split_address(self.opts.db_address, url)
                self._db = _Database(url, "direct", host=host, port=port)
        return self._db

    def _replicas(self) -> int:
        dep = self.app.kube().get(DEPLOYMENTS, self.app.settings.coder_deployment, self.app.namespace)
        return int((dep.get("spec") or {}).get("replicas", 1))

    def _scale(self, replicas: int) -> None:
        self.app.kube().patch(DEPLOYMENTS, self.app.settings.coder_deployment, self.app.namespace,
                              {"spec": {"replicas": replicas}})

    def _pods(self) -> list[dict[str, Any]]:
        dep = self.app.kube().get(DEPLOYMENTS, self.app.settings.coder_deployment, self.app.namespace)
        labels = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        return self.app.kube().list(PODS, self.app.namespace, label_selector=selector)

    def _wait_no_pods(self) -> None:
        deadline = time.monotonic() + self.opts.wait_s
        while self._pods():
            if time.monotonic() >= deadline:
                raise StepFailed(f"Coder pods still running {self.opts.wait_s:g}s after scaling to 0")
            time.sleep(self.opts.poll_s)

    def _rolled_out(self, deadline: float) -> bool:
        try:
            wait_for_rollout(self.app.kube(), self.app.namespace, self.app.settings.coder_deployment, deadline,
                             interval=min(self.opts.poll_s, 0.25))
        except RolloutError:
            return False
        return True

    def _scale_to(self, replicas: int) -> str:
        self._scale(replicas)
        try:
            wait_for_rollout(self.app.kube(), self.app.namespace, self.app.settings.coder_deployment,
                             time.monotonic() + self.opts.wait_s, interval=min(self.opts.poll_s, 0.25))
        except RolloutError as exc:
            return (f"Coder back to {replicas} replica(s) but not ready: {self.app.redact(str(exc))}; "
                    f"kubectl -n {self.app.namespace} get pods")
        return f"Coder back to {replicas} replica(s), ready"


def _file_chunks(path: Path, progress: Progress | None) -> Iterator[bytes]:
    sent = 0
    with open(path, "rb", buffering=0) as fh:
        while chunk := fh.read(READ_CHUNK):
            sent += len(chunk)
            yield chunk
            if progress is not None:
                progress(sent)


def _restore_into(app: App, db: _Database, path: Path, record: mf.Manifest, progress: Progress | None,
                  owner: str | None) -> None:
    """The sessions act as `owner` (the database's) from their start, and a custom archive's owners are left out,
    so every restored object is owned by it whoever logs in: the URL's user may be a login role acting as the
    owner (rotate-secrets --strategy alternate), and the archive may name owners from a broken layout. A record
    from before the owner was recorded has none: the archive's owners then stand."""
    role = restore_role_option(owner) if owner else ""
    if db.target is not None:
        output = bytearray()
        try:
            result = pod.run(app, db.target, pod.RESTORE, record.format, str(record.size), *([role] if role else []),
                             stdout=lambda b: output.extend(b[: max(0, 65536 - len(output))]),
                             stdin=_file_chunks(path, progress))
        except ExecStreamBroken as exc:
            raise StepFailed(str(exc)) from None
        if not result.ok:
            raise StepFailed(f"restore in {db.target.namespace}/{db.target.pod} failed (exit {result.exit_code}), "
                             f"rolled back: {app.redact(pod.error_line(result))}")
        return
    env = pgtools.libpq_env(db.url, host=db.host, port=db.port, connect_timeout=app.timeout)
    if role:
        env["PGOPTIONS"] = f"-c role={role}"
    reason = pgtools.restore_archive(str(path), record.format, database=db.url.database, env=env,
                                     flags=("--clean", "--if-exists", *(("--no-owner",) if role else ())),
                                     why="to restore")
    if reason is not None:
        raise StepFailed(app.redact(f"restore failed, rolled back: {reason}"))
