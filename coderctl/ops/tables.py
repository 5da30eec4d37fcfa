"""Exact row counts of a live database, named as pg_dump names tables, and their comparison with a manifest."""

from __future__ import annotations

from coderctl.clients.postgres import DatabaseURL
from coderctl.context import App
from coderctl.database.messages import first_error
from coderctl.ops import pod
from coderctl.ops.journal import StepFailed

# quote_ident follows the same quoting rules as pg_dump's names in `COPY name ...`. Plain tables only:
# a partitioned table's rows are dumped (and counted) under its partitions.
COUNT_SQL = (
    "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), "
    "(xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), "
    "false, true, '')))[1]::text "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1"
)


def count_exec(app: App, t: pod.Target) -> dict[str, int]:
    return {row[0]: int(row[1]) for row in pod.query(app, t, COUNT_SQL) if len(row) >= 2}


def count_direct(app: App, url: DatabaseURL, host: str, port: int) -> dict[str, int]:
    import psycopg

    from coderctl.clients.postgres import connect

    try:
        with connect(url, timeout=app.timeout, host=host, port=port) as conn:
            rows = conn.execute(COUNT_SQL).fetchall()
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StepFailed(app.redact(f"counting rows at {host}:{port}: {first}")) from None
    return {str(name): int(str(count)) for name, count in rows}


# Any relation a restore could collide with or that holds data: tables, partitioned tables, views,
# materialized views, sequences, foreign tables.
RELATIONS_SQL = (
    "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') "
    "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%' "
    "ORDER BY 1 LIMIT 4"
)


def user_relations(app: App, url: DatabaseURL) -> list[str]:
    """Up to four relations (tables, views, sequences...) of the database; [] when it is empty."""
    import psycopg

    from coderctl.clients.postgres import connect

    try:
        with connect(url, timeout=app.timeout) as conn:
            rows = conn.execute(RELATIONS_SQL).fetchall()
    except psycopg.Error as exc:
        first = first_error(str(exc), type(exc).__name__)
        raise StepFailed(app.redact(f"cannot connect to {url.host}:{url.port}/{url.database}: {first}")) from None
    return [str(row[0]) for row in rows]


def differences(expected: dict[str, int], actual: dict[str, int]) -> list[str]:
    """Tables whose counts differ from the manifest, or that are missing; tables the backup does not have
    are not differences (a newer schema may add some)."""
    out: list[str] = []
    for table, rows in sorted(expected.items()):
        if table not in actual:
            out.append(f"{table}: missing (expected {rows} rows)")
        elif actual[table] != rows:
            out.append(f"{table}: {actual[table]} rows, expected {rows}")
    return out


def summary(diffs: list[str], limit: int = 5) -> str:
    more = f" (+{len(diffs) - limit} more)" if len(diffs) > limit else ""
    return "; ".join(diffs[:limit]) + more
