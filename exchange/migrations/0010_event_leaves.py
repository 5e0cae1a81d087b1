"""Stored leaves (core/ledger.py `EventLeaf`): each event's leaf data as it was hashed, so
that the audit log serves it instead of encoding every event again.

The table and its append-only triggers only. Events recorded before it existed have no
stored leaf; the audit log encodes those as before until `manage.py
auditlog_backfill_leaves` has filled them (batched, resumable, safe while the exchange
runs): a migration would hold one transaction over the whole events table.
"""

from __future__ import annotations

from django.db import migrations, models

from . import _append_only as append_only


class Migration(migrations.Migration):
    dependencies = [
        ("exchange", "0009_checkpoints_and_witnesses"),
    ]

    operations = [
        migrations.CreateModel(
            name="EventLeaf",
            fields=[
                ("seq", models.BigIntegerField(help_text="The event's seq.", primary_key=True, serialize=False)),
                (
                    "data",
                    models.BinaryField(
                        help_text="The event's leaf data (docs/ledger.md); SHA-256(0x00 || data) is its leaf hash."
                    ),
                ),
            ],
            options={
                "verbose_name": "stored leaf",
            },
        ),
        append_only.triggers("exchange_eventleaf", "stored leaves"),
    ]
