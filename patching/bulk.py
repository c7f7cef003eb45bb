"""Set-based writes for a batch of runs: one statement per table, whatever the batch's size.

PostgreSQL gets arrays (`UPDATE … FROM unnest(…)`, `INSERT … SELECT unnest(…)`) and COPY through
psycopg 3; the embedded default (SQLite) gets the same statements over a VALUES list, in chunks
under its parameter limit, and inserts as one prepared statement run per row (executemany: no
model instances, no SQL compiled per row). Values are prepared by each field (`get_db_prep_value`),
as the ORM does.
"""

from collections.abc import Sequence

from django.db import connection
from django.db.models import Field, ForeignObject, Lookup

SQLITE_CHUNK = 500  # rows per statement on SQLite (its parameter limit is 32,766)


def _fields(model, columns: Sequence[str]):
    """The fields of `columns`, each named by its attname (`guest_id`) or its name."""
    by_attname = {f.attname: f for f in model._meta.concrete_fields}
    return [by_attname.get(c) or model._meta.get_field(c) for c in columns]


def _sqlite_insert(model, columns: Sequence[str], rows: Sequence[Sequence], *, ignore: bool) -> None:
    fields = _fields(model, columns)
    names = ", ".join(f'"{field.column}"' for field in fields)
    marks = ", ".join(["%s"] * len(fields))
    verb = "INSERT OR IGNORE" if ignore else "INSERT"
    with connection.cursor() as cursor:
        cursor.executemany(
            f'{verb} INTO "{model._meta.db_table}" ({names}) VALUES ({marks})',
            list(zip(*_prepared(model, columns, rows), strict=True)),
        )


def _prepared(model, columns: Sequence[str], rows: Sequence[Sequence]) -> list[list]:
    """The rows' values as the database takes them, column by column."""
    fields = _fields(model, columns)
    if connection.vendor == "postgresql":
        # Arrays of JSON go in as text and are cast: psycopg dumps a list of str as text[].
        # psycopg adapts the rest as they are (what get_db_prep_value would return for them anyway).
        return [
            [None if row[i] is None else _json(row[i]) for row in rows]
            if field.get_internal_type() == "JSONField"
            else [row[i] for row in rows]
            for i, field in enumerate(fields)
        ]
    return [_prepared_column(field, [row[i] for row in rows]) for i, field in enumerate(fields)]


def _prepared_column(field, values: list) -> list:
    """`field.get_db_prep_value` of each value, worked out once per distinct value (of the same type):
    a batch's rows share most of theirs (its clock, kind, status, parameters' times...)."""
    known: dict = {}
    prepared = []
    for value in values:
        try:
            key = (value.__class__, value)
            done = known[key]
        except KeyError:
            done = known[key] = field.get_db_prep_value(value, connection)
        except TypeError:  # unhashable (a JSON document): worked out each time
            done = field.get_db_prep_value(value, connection)
        prepared.append(done)
    return prepared


def _bound_cursor():
    """A psycopg cursor with server-side binding on Django's connection (the same transaction): the
    arrays go as parameters, not spelled out into the SQL text as Django's client-side cursor does;
    in binary (`%b`), which spends no time quoting and escaping each element as text does."""
    import psycopg

    connection.ensure_connection()
    return psycopg.Cursor(connection.connection)


def _json(value) -> str:
    import json

    return json.dumps(value)


def _array_type(model, column: str) -> str:
    (field,) = _fields(model, [column])
    if field.get_internal_type() == "JSONField":
        return "jsonb[]"
    return f"{field.db_type(connection)}[]"


def update_rows(
    model,
    key: str,
    columns: Sequence[str],
    rows: Sequence[Sequence],
    *,
    assign: dict[str, str] | None = None,
    where: str = "",
) -> int:
    """One UPDATE of `model`'s table from per-row values: row = (key, *columns).

    Each column is set to its value (`v.<column>`) unless `assign` gives an SQL expression for it
    (over `t.` the row as it was and `v.` the values). `where` adds a condition (over t and v).
    Returns how many rows were updated.
    """
    if not rows:
        return 0
    table = model._meta.db_table
    names = [key, *columns]
    assign = assign or {}
    sets = ", ".join(f'"{c}" = {assign.get(c, f"v.{c}")}' for c in columns)
    cond = f't."{key}" = v.{key}' + (f" AND ({where})" if where else "")
    if connection.vendor == "postgresql":
        arrays = _prepared(model, names, rows)
        unnest = ", ".join(f"%b::{_array_type(model, c)}" for c in names)
        with _bound_cursor() as cursor:
            cursor.execute(
                f'UPDATE "{table}" AS t SET {sets} FROM unnest({unnest}) AS v({", ".join(names)}) WHERE {cond}',
                arrays,
            )
            return cursor.rowcount
    with connection.cursor() as cursor:
        done = 0
        for start in range(0, len(rows), SQLITE_CHUNK):
            chunk = rows[start : start + SQLITE_CHUNK]
            columns_ = _prepared(model, names, chunk)
            values = ", ".join("(" + ", ".join(["%s"] * len(names)) + ")" for _ in chunk)
            params = [columns_[i][j] for j in range(len(chunk)) for i in range(len(names))]
            cursor.execute(
                f'WITH v({", ".join(names)}) AS (VALUES {values}) UPDATE "{table}" AS t SET {sets} FROM v WHERE {cond}',
                params,
            )
            done += cursor.rowcount
        return done


def copy_rows(model, columns: Sequence[str], rows: Sequence[Sequence]) -> None:
    """Insert new rows: COPY on PostgreSQL (the fastest way in), executemany on SQLite."""
    if not rows:
        return
    if connection.vendor != "postgresql":
        _sqlite_insert(model, columns, rows, ignore=False)
        return
    names = ", ".join(f'"{c}"' for c in columns)
    with connection.cursor() as cursor:
        with cursor.cursor.copy(f'COPY "{model._meta.db_table}" ({names}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row(row)


def insert_new_rows(model, columns: Sequence[str], rows: Sequence[Sequence]) -> None:
    """Insert rows, skipping the ones a unique constraint already holds (ON CONFLICT DO NOTHING)."""
    if not rows:
        return
    if connection.vendor != "postgresql":
        _sqlite_insert(model, columns, rows, ignore=True)
        return
    names = ", ".join(f'"{c}"' for c in columns)
    unnest = ", ".join(f"%b::{_array_type(model, c)}" for c in columns)
    with _bound_cursor() as cursor:
        cursor.execute(
            f'INSERT INTO "{model._meta.db_table}" ({names}) SELECT * FROM unnest({unnest}) ON CONFLICT DO NOTHING',
            _prepared(model, columns, rows),
        )


class AnyOf(Lookup):
    """`field__any=ids`: `field = ANY(%s)` with the ids as one array parameter on PostgreSQL, where
    `__in` spells out one placeholder per id (thousands, for a batch); `IN (…)` elsewhere."""

    lookup_name = "any"
    prepare_rhs = False

    def get_db_prep_lookup(self, value, connection):
        return ("%s", [list(value)])

    def as_sql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        ids = list(self.rhs)
        if connection.vendor == "postgresql":
            return f"{lhs} = ANY(%s)", [*lhs_params, ids]
        if not ids:
            return "1 = 0", list(lhs_params)
        return f"{lhs} IN ({', '.join(['%s'] * len(ids))})", [*lhs_params, *ids]


Field.register_lookup(AnyOf)
ForeignObject.register_lookup(AnyOf)
