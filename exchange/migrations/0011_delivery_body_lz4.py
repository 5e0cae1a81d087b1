"""Delivery bodies compressed with LZ4 instead of PostgreSQL's default pglz.

Every webhook POST stores its body (about 80 KB for 100 signed submissions) before it is
sent, and PostgreSQL compresses each one as it stores it: with pglz that was a good part
of the database's CPU per POST (docs/benchmarks/webhooks.md). LZ4 compresses such JSON
several times faster for a similar size. Only new rows are compressed with LZ4; old ones
stay readable as they are. A server built without LZ4, or older than PostgreSQL 14 (which
has no per-column compression), keeps pglz. Nothing on SQLite.
"""

from django.db import migrations

FORWARD = """
DO $$
BEGIN
    ALTER TABLE exchange_delivery ALTER COLUMN body SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'this PostgreSQL has no LZ4: delivery bodies stay compressed with pglz';
END
$$;
"""
BACKWARD = "ALTER TABLE exchange_delivery ALTER COLUMN body SET COMPRESSION default;"


def _has_column_compression(connection) -> bool:  # noqa: ANN001
    return connection.vendor == "postgresql" and connection.pg_version >= 140000


def forward(apps, schema_editor):  # noqa: ANN001, ANN201 - Django's migration signature
    if _has_column_compression(schema_editor.connection):
        schema_editor.execute(FORWARD)


def backward(apps, schema_editor):  # noqa: ANN001, ANN201 - Django's migration signature
    if _has_column_compression(schema_editor.connection):
        schema_editor.execute(BACKWARD)


class Migration(migrations.Migration):
    dependencies = [("exchange", "0010_event_leaves")]

    operations = [migrations.RunPython(forward, backward, elidable=False)]
