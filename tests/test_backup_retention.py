"""backup prune over a synthetic set of backups spanning months: exactly the expected ones stay."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone, UTC
from pathlib import Path

from clirun import run_cli

from coderctl.ops import manifest as mf


def make_backup(directory: Path, moment: datetime, *, verified: bool = True) -> str:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = mf.backup_name("coder", moment, "custom")
    data = f"fake archive {moment.isoformat()}".encode()
    (directory / name).write_bytes(data)
    record = mf.Manifest(file=name, created_at=mf.format_time(moment), duration_s=1.0, via="exec", format="custom",
                         database="coder", size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                         verification=mf.Verification("ok" if verified else "skipped"), tables={"public.users": 1})
    mf.write(directory / name, record)
    return name


def at(month: int, day: int, hour: int = 2) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def synthetic(directory: Path) -> dict[datetime, str]:
    """A backup at 02:00 every day from 1 January to 15 April 2026, two more on 15 April; the two newest
    were made with --no-verify."""
    names: dict[datetime, str] = {}
    day = at(1, 1)
    while day <= at(4, 15):
        names[day] = make_backup(directory, day)
        day += timedelta(days=1)
    for hour in (10, 14):
        names[at(4, 15, hour)] = make_backup(directory, at(4, 15, hour), verified=False)
    return names


def prune(directory: Path, *args: str) -> dict[str, object]:
    r = run_cli("-o", "json", "backup", "prune", str(directory), *args)
    assert r.code == 0, r.output
    return json.loads(r.stdout)


def remaining(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if p.name.endswith(".dump")}


def test_grandfather_father_son(tmp_path: Path) -> None:
    names = synthetic(tmp_path)
    (tmp_path / "coder-20250101T000000Z.dump.partial").write_bytes(b"left over")
    (tmp_path / "notes.sql").write_text("-- not a coderctl backup")
    policy = ("--keep-last", "3", "--keep-daily", "7", "--keep-weekly", "4", "--keep-monthly", "3")
    expected = {
        at(4, 15, 14), at(4, 15, 10), at(4, 15),                          # last 3
        at(4, 14), at(4, 13), at(4, 12), at(4, 11), at(4, 10), at(4, 9),  # daily 7 (15 Apr counted once)
        at(4, 5), at(3, 29),                                               # weekly: W16 15 Apr, W15 12 Apr, W14, W13
        at(3, 31), at(2, 28),                                              # monthly: April, March, February
    }
    doc = prune(tmp_path, *policy, "--dry-run")
    result = doc["result"]
    assert result["dry_run"] is True
    assert remaining(tmp_path) == set(names.values())
    kept = {b["file"] for b in result["backups"] if b["action"] == "keep"}
    assert kept == {names[t] for t in expected}
    going = [b for b in result["backups"] if b["action"] == "would remove"]
    assert len(going) == len(names) - len(expected)
    assert all(b["reasons"] == ["no rule keeps it"] for b in going)
    reasons = {b["file"]: b["reasons"] for b in result["backups"]}
    assert reasons[names[at(4, 15, 14)]] == ["last #1", "daily #1 (2026-04-15)", "weekly #1 (2026-W16)",
                                             "monthly #1 (2026-04)"]
    assert reasons[names[at(3, 29)]] == ["weekly #4 (2026-W13)"]
    assert reasons[names[at(4, 15)]] == ["last #3", "newest verified backup"]
    assert set(result["untouched"]) == {"coder-20250101T000000Z.dump.partial", "notes.sql"}

    text = run_cli("backup", "prune", str(tmp_path), *policy, "--dry-run")
    assert "would remove" in text.stdout and "no rule keeps it" in text.stdout

    prune(tmp_path, *policy)
    assert remaining(tmp_path) == {names[t] for t in expected}
    assert {p.name for p in tmp_path.glob("*.dump.json")} == {names[t] + ".json" for t in expected}
    assert (tmp_path / "notes.sql").exists() and (tmp_path / "coder-20250101T000000Z.dump.partial").exists()
    again = prune(tmp_path, *policy)
    assert all(b["action"] == "keep" for b in again["result"]["backups"])


def test_the_newest_verified_backup_is_never_removed(tmp_path: Path) -> None:
    names = synthetic(tmp_path)
    prune(tmp_path, "--keep-last", "1")
    assert remaining(tmp_path) == {names[at(4, 15, 14)], names[at(4, 15)]}


def test_prune_needs_a_policy(tmp_path: Path) -> None:
    synthetic(tmp_path)
    r = run_cli("backup", "prune", str(tmp_path))
    assert r.code == 2 and "no --keep-* option" in r.stderr
    assert len(remaining(tmp_path)) == 107


def test_list_shows_every_backup(tmp_path: Path) -> None:
    synthetic(tmp_path)
    (tmp_path / mf.backup_name("coder", at(4, 1), "custom")).write_bytes(b"changed")
    r = run_cli("-o", "json", "backup", "list", str(tmp_path))
    assert r.code == 1  # one checksum does not match
    backups = json.loads(r.stdout)["backups"]
    assert len(backups) == 107 and backups[0]["file"] == mf.backup_name("coder", at(4, 15, 14), "custom")
    states = {b["file"]: b["checksum"] for b in backups}
    assert states[mf.backup_name("coder", at(4, 1), "custom")] == "size-mismatch"
    assert sum(s == "ok" for s in states.values()) == 106
    assert backups[0]["verified"] is False and backups[2]["verified"] is True


def test_prune_protects_the_newest_intact_backup_not_a_corrupt_one(tmp_path: Path) -> None:
    """The newest backup's file is damaged in place (same size): its manifest still says verified, but it
    must not be what protects; the older intact backup is kept as the newest verified one."""
    old = make_backup(tmp_path, at(4, 1))
    new = make_backup(tmp_path, at(4, 2))
    data = (tmp_path / new).read_bytes()
    (tmp_path / new).write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])
    doc = prune(tmp_path, "--keep-last", "1")
    assert remaining(tmp_path) == {old, new}
    reasons = {b["file"]: b["reasons"] for b in doc["result"]["backups"]}
    assert reasons[old] == ["newest verified backup"]
    assert reasons[new][0] == "last #1" and "checksum mismatch" in reasons[new][1]


def test_prune_passes_over_every_damaged_backup_it_would_protect(tmp_path: Path) -> None:
    names = synthetic(tmp_path)
    for moment in (at(4, 15), at(4, 14)):  # the two newest verified ones are damaged
        path = tmp_path / names[moment]
        data = path.read_bytes()
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    prune(tmp_path, "--keep-last", "1")
    assert remaining(tmp_path) == {names[at(4, 15, 14)], names[at(4, 13)]}


BAD_MANIFESTS = {
    "created-at-number": lambda d: {**d, "created_at": 1764500000},
    "empty-object": lambda d: {},
    "not-json": None,
    "a-list": lambda d: [d],
    "verification-string": lambda d: {**d, "verification": "ok"},
    "size-string": lambda d: {**d, "size": str(d["size"])},
    "tables-list": lambda d: {**d, "tables": ["public.users"]},
    "created-at-garbage": lambda d: {**d, "created_at": "yesterday"},
}


def test_a_malformed_manifest_is_one_bad_entry(tmp_path: Path) -> None:
    names = synthetic(tmp_path)
    broken: dict[str, str] = {}
    for (kind, change), moment in zip(BAD_MANIFESTS.items(), (at(2, d) for d in range(1, 20)), strict=False):
        manifest = tmp_path / (names[moment] + ".json")
        if change is None:
            manifest.write_text("{not json")
        else:
            manifest.write_text(json.dumps(change(json.loads(manifest.read_text()))))
        broken[names[moment]] = kind
    r = run_cli("-o", "json", "backup", "list", str(tmp_path))
    assert r.code == 1, r.output
    assert "Traceback" not in r.output and "internal error" not in r.output
    states = {b["file"]: (b["checksum"], b["detail"]) for b in json.loads(r.stdout)["backups"]}
    assert len(states) == 107
    for name in broken:
        assert states[name][0] == "bad-manifest", (name, states[name])
        assert states[name][1]
    assert sum(s == "ok" for s, _ in states.values()) == 107 - len(broken)
    text = run_cli("backup", "list", str(tmp_path))
    assert text.code == 1 and "bad-manifest" in text.stdout

    doc = prune(tmp_path, "--keep-last", "3")
    assert set(broken) <= set(doc["result"]["untouched"])
    assert set(broken) <= remaining(tmp_path)
    assert remaining(tmp_path) == set(broken) | {names[at(4, 15, 14)], names[at(4, 15, 10)], names[at(4, 15)]}


def test_backups_started_in_the_same_second_keep_their_order(tmp_path: Path) -> None:
    """`-2` is the later of two backups made within one second: `--keep-last 1` keeps it, not the first."""
    moment = at(3, 1)
    first = make_backup(tmp_path, moment)
    second_name = first.replace(".dump", "-2.dump")
    (tmp_path / first).rename(tmp_path / second_name)
    manifest = json.loads((tmp_path / f"{first}.json").read_text())
    (tmp_path / f"{first}.json").unlink()
    manifest["file"] = second_name
    (tmp_path / f"{second_name}.json").write_text(json.dumps(manifest))
    first_again = make_backup(tmp_path, moment)
    assert first_again == first
    prune(tmp_path, "--keep-last", "1")
    assert remaining(tmp_path) == {second_name}
