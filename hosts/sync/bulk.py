"""Bulk statements for the sync's writes: multi-row INSERT (or upsert) without model
instances, and deletes, each cut into chunks that stay under the database's limit on
parameters in one statement. Nothing here knows what a domain or a disk means."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from django.db import connection

from hosts import models

# Field types whose Python values the database driver cannot take as they are.
_PREPARED_TYPES = frozenset({"DateTimeField", "DateField", "TimeField", "JSONField", "DecimalField", "UUIDField"})


def insert_rows(
    model: type[models.Domain] | type[models.Disk] | type[models.ChainLayer],
    rows: list[dict[str, object]],
    *,
    conflict: Sequence[str] = (),
    update: Sequence[str] = (),
    returning: Sequence[str] = (),
) -> list[tuple]:
    """Insert (or upsert) plain rows, one multi-row statement per chunk, as bulk_create
    would, but without a model instance and a per-value preparation step for every cell:
    at a first sync of 1,000 domains those were most of its cost. Values are given as the
    driver takes them (str, int, bool, None); fields a row leaves out get their default,
    so a field added to the model later needs no change here.
    """
    if not rows:
        return []
    quote = connection.ops.quote_name
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    defaults = {field.attname: field.get_db_prep_save(field.get_default(), connection) for field in fields}
    prepared = [field for field in fields if field.get_internal_type() in _PREPARED_TYPES]
    column_of = {field.name: str(field.column) for field in fields}
    columns = ", ".join(quote(column_of[field.name]) for field in fields)
    tail = ""
    if conflict:
        updates = ", ".join(f"{quote(column_of[name])} = EXCLUDED.{quote(column_of[name])}" for name in update)
        tail += f" ON CONFLICT ({', '.join(quote(name) for name in conflict)}) DO UPDATE SET {updates}"
    if returning:
        tail += " RETURNING " + ", ".join(quote(name) for name in returning)
    placeholders = "(" + ", ".join(["%s"] * len(fields)) + ")"
    out: list[tuple] = []
    with connection.cursor() as cursor:
        for chunk in chunks(rows, max(1, _max_params() // len(fields))):
            params: list[Any] = []
            for row in chunk:
                for field in prepared:
                    if field.attname in row:
                        row = {**row, field.attname: field.get_db_prep_save(row[field.attname], connection)}
                params.extend(row.get(field.attname, defaults[field.attname]) for field in fields)
            cursor.execute(
                f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES {', '.join([placeholders] * len(chunk))}{tail}",
                params,
            )
            if returning:
                out.extend(tuple(row) for row in cursor.fetchall())
    return out


def delete_in_chunks(model: type[models.Domain] | type[models.Disk], ids: Sequence[int]) -> None:
    # Through the ORM's collector (not a raw DELETE): whatever else comes to point at these
    # rows (migrations, audit) keeps its on_delete rules. Only deletions cost per-row work,
    # and those are as rare as domains and disks that disappear.
    for chunk in chunks(ids):
        model.objects.filter(id__in=chunk).delete()


def chunks(items: Sequence, size: int | None = None) -> Iterator[Sequence]:
    """Slices small enough for the database's limit on parameters in one statement."""
    size = size or _max_params()
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _max_params() -> int:
    # SQLite builds differ (999 in old ones, 32766 or 250000 in newer); PostgreSQL
    # reports None but its protocol stops at 65535 parameters.
    return min(connection.features.max_query_params or 65535, 65535) - 100
