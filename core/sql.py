"""SQL helpers for hot paths where the ORM's per-value work costs more than the database.

Both serve PostgreSQL and SQLite and fall back to the plain ORM form elsewhere:
- `values_in()`: the right-hand side of `field__in` for many values, as one JSON parameter;
- `insert_rows()`: a multi-row INSERT of field values (on PostgreSQL a large batch by
  COPY), returning chosen columns;
- `columns()` and `instances()`: a hand-written SELECT of whole rows of one or more
  models (a join), read back into model instances as the ORM would (same converters).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Collection, Sequence
from typing import Any

from django.db import connection
from django.db.models import Model
from django.db.models.expressions import RawSQL

# Up to this many integer ids are bound one placeholder each; more go as one JSON array.
SMALL_IN = 20
# The largest value of a 64-bit integer column (ids, the ledger's sequence numbers). A
# larger one in a query fails in the driver (SQLite: OverflowError; PostgreSQL: an error
# or a comparison with numeric), so parsers refuse it first.
BIGINT_MAX = 2**63 - 1


def values_in(values: Collection[int] | Collection[str]) -> list[Any] | RawSQL:
    """The right-hand side of `field__in`, cheap for thousands of integers or strings.

    Django compiles one placeholder per value (a 5,000-entry feed page spent more time
    there than in the database), and psycopg's client-side binding parses a query with a
    thousand placeholders in Python (~5 ms, against ~1 ms). So:
    - integer ids: above SMALL_IN, one JSON array parameter that the database unpacks
      (json_each on SQLite, jsonb_array_elements_text on PostgreSQL);
    - strings: one JSON parameter on PostgreSQL; a plain list elsewhere (SQLite binds
      parameters natively and uses the index either way).
    """
    values = list(values)
    vendor = connection.vendor
    strings = bool(values) and isinstance(values[0], str)
    if strings:
        if vendor != "postgresql":
            return values
        return RawSQL("SELECT jsonb_array_elements_text(%s::jsonb)", [json.dumps(values)])
    if len(values) <= SMALL_IN or vendor not in ("sqlite", "postgresql"):
        return values
    payload = json.dumps(values)
    if vendor == "postgresql":
        return RawSQL("SELECT jsonb_array_elements_text(%s::jsonb)::bigint", [payload])
    return RawSQL("SELECT value FROM json_each(%s)", [payload])


def insert_rows(
    model: type[Model],
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    returning: Sequence[str] = (),
    *,
    skip_conflicts: bool = False,
    json_text: Collection[str] = (),
) -> list[tuple[Any, ...]] | None:
    """INSERT rows of field values in one statement; the `returning` columns of the new rows.

    On PostgreSQL a batch of COPY_ROWS or more without `skip_conflicts` goes by COPY
    (`_copy_rows`); it may then return only the primary key and the inserted columns.

    `json_text`: JSON columns whose values are given already encoded, as JSON text (or
    None for SQL NULL): a caller that encoded them elsewhere (another process) saves
    encoding them again here.

    `skip_conflicts`: a row that would break a unique constraint is left out (ON CONFLICT
    DO NOTHING), and only the rows inserted are returned.

    Values are what the model fields hold (aware datetimes, dicts and lists for JSON
    fields, which must use the default encoder). Rows come back in no promised order
    (SQLite promises none), so callers ask for a unique column next to the id. None when
    `returning` is asked of a backend that cannot return rows from a multi-row INSERT.
    """
    if returning and not connection.features.can_return_rows_from_bulk_insert:
        insert_rows(model, columns, rows, skip_conflicts=skip_conflicts, json_text=json_text)
        return None
    if not rows:
        return []
    quote, meta = connection.ops.quote_name, model._meta
    fields = [meta.get_field(column) for column in columns]
    head = f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "  # type: ignore[union-attr]
    tail = f" RETURNING {', '.join(quote(meta.get_field(c).column) for c in returning)}" if returning else ""  # type: ignore[union-attr]
    if skip_conflicts:
        tail = f" ON CONFLICT DO NOTHING{tail}"
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql" and len(rows) >= COPY_ROWS and not skip_conflicts:
            return _copy_rows(cursor, meta, fields, rows, returning, json_text)
        if connection.vendor == "postgresql":
            # One JSON parameter that the server takes apart: psycopg's client-side binding
            # would otherwise parse a query of ~13,000 placeholders in Python.
            values = ", ".join(
                f"(r.value ->> {i})::jsonb"  # (a JSON null gives SQL NULL)
                if column in json_text
                # NULLIF: a None in a row is SQL NULL, as the ORM stores it, not JSON null.
                else f"NULLIF(r.value -> {i}, 'null'::jsonb)"
                if f.get_internal_type() == "JSONField"
                else f"(r.value ->> {i})::{f.db_type(connection)}"
                for i, (column, f) in enumerate(zip(columns, fields, strict=True))
            )
            cursor.execute(
                f"{head}SELECT {values} FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS r(value, n) "
                f"ORDER BY r.n{tail}",
                [json.dumps(rows, default=_batch_times())],
            )
            return cursor.fetchall() if returning else []
        adapters = [
            None if column in json_text else field_adapter(f) for column, f in zip(columns, fields, strict=True)
        ]
        group = f"({', '.join(['%s'] * len(fields))})"
        per_statement = max(1, (connection.features.max_query_params or 65_535) // len(fields))
        answer: list[tuple[Any, ...]] = []
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            params = [
                adapt(value) if adapt else value for row in chunk for adapt, value in zip(adapters, row, strict=True)
            ]
            cursor.execute(f"{head}VALUES {', '.join([group] * len(chunk))}{tail}", params)
            if returning:
                answer.extend(cursor.fetchall())
        return answer


# From this many rows, PostgreSQL is sent the rows by COPY rather than an INSERT.
COPY_ROWS = 200


def _copy_rows(
    cursor: Any,
    meta: Any,
    fields: Sequence[Any],
    rows: Sequence[Sequence[Any]],
    returning: Sequence[str],
    json_text: Collection[str],
) -> list[tuple[Any, ...]]:
    """insert_rows() on PostgreSQL by COPY: the server parses each value once, as its column's
    input, where the INSERT parsed the whole batch as one JSON document first (and a JSON
    column's text twice). COPY returns nothing, so when rows are to be returned the new ids
    are taken from the table's sequence first, and the returned columns are the ids and the
    rows' own values (docs/decisions.md, "Bulk rows by COPY")."""
    quote = connection.ops.quote_name
    names = [f.column for f in fields]
    pk = meta.pk.column
    wanted = [pk if name == "id" else meta.get_field(name).column for name in returning]
    ids: list[int] = []
    if returning:
        if any(column != pk and column not in names for column in wanted):
            raise ValueError("COPY can return only the primary key and the inserted columns")
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            [meta.db_table, pk, len(rows)],
        )
        ids = [row[0] for row in cursor.fetchall()]
        names = [pk, *names]
    # (the driver's own adapter of an aware time was a third of a row's cost)
    time = _batch_times()

    def time_text(value: dt.datetime | str | None) -> str | None:
        return value if value is None or isinstance(value, str) else time(value)

    kinds = [None if f.column in json_text else f.get_internal_type() for f in fields]
    encode = [_json_or_null if k == "JSONField" else time_text if k == "DateTimeField" else None for k in kinds]
    statement = f"COPY {quote(meta.db_table)} ({', '.join(quote(n) for n in names)}) FROM STDIN"
    with cursor.cursor.copy(statement) as copy:
        write = copy.write_row
        for position, row in enumerate(rows):
            values = [value if adapt is None else adapt(value) for adapt, value in zip(encode, row, strict=True)]
            write([ids[position], *values] if returning else values)
    if not returning:
        return []
    where = {name: i for i, name in enumerate(names)}
    return [tuple((ids[p] if c == pk else row[where[c] - 1]) for c in wanted) for p, row in enumerate(rows)]


def _json_or_null(value: Any) -> str | None:
    if value is None:
        return None
    if not value and type(value) in (list, dict):  # most rows' labels: no encoder call
        return "[]" if type(value) is list else "{}"
    return _encode_json(value)


def columns(model: type[Model], alias: str) -> str:
    """Every concrete column of `model` for a SELECT list, table alias `alias`, in field order."""
    quote = connection.ops.quote_name
    return ", ".join(f"{alias}.{quote(f.column)}" for f in model._meta.concrete_fields)


def instances(row: Sequence[Any], models: Sequence[type[Model]]) -> list[Model]:
    """Model instances from a row that holds `columns()` of each model, one after another.

    For requests where compiling the ORM's query costs more than the database's answer (the
    API key lookup runs on every request): each value goes through the converters the ORM
    applies (dates on SQLite, JSON on both), then `Model.from_db`, as a queryset would.
    """
    made, start = [], 0
    for model in models:
        fields = model._meta.concrete_fields
        values = list(row[start : start + len(fields)])
        for i, converters in _converters(model):
            expression = fields[i].get_col(model._meta.db_table)
            for convert in converters:
                values[i] = convert(values[i], expression, connection)
        made.append(model.from_db(connection.alias, [f.attname for f in fields], values))
        start += len(fields)
    return made


_CONVERTERS: dict[tuple[str, type[Model]], list[tuple[int, list[Callable[..., Any]]]]] = {}


def _converters(model: type[Model]) -> list[tuple[int, list[Callable[..., Any]]]]:
    key = (connection.vendor, model)
    if key not in _CONVERTERS:
        found = []
        for i, field in enumerate(model._meta.concrete_fields):
            col = field.get_col(model._meta.db_table)
            converters = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
            if converters:
                found.append((i, converters))
        _CONVERTERS[key] = found
    return _CONVERTERS[key]


def json_default(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a column value")


_encode_json = json.JSONEncoder(default=json_default).encode


def _batch_times() -> Callable[[Any], str]:
    """json_default() for one batch, each distinct time formatted once: a batch's rows
    share most of their times (the transaction's `now`)."""
    times: dict[Any, str] = {}

    def text(value: Any) -> str:
        found = times.get(value)
        if found is None:
            found = times[value] = json_default(value)
        return found

    return text


def field_adapter(field: Any) -> Callable[[Any], Any] | None:
    """How the ORM would adapt this field's values for the connection (None: as they are)."""
    kind = field.get_internal_type()
    if kind == "DateTimeField":
        # A batch's rows share most of their times (the transaction's `now`): each distinct
        # time is adapted once (Django's SQLite adapter makes it naive and formats it, ~20 µs).
        return functools.lru_cache(maxsize=1024)(connection.ops.adapt_datetimefield_value)
    if kind == "JSONField":
        # None is SQL NULL, as the ORM stores it in a nullable JSON field (not JSON null).
        return lambda value: None if value is None else connection.ops.adapt_json_value(value, field.encoder)
    return None
