# ruff: noqa: E501 - the SQL statements are kept whole
"""Fewer indexes on the tables a new peer's bootstrap writes a million rows into.

No column gets an index of its own where another index or constraint leads with it
(a submission's hash and signing key, a listing's hash); the columns that are mostly
empty (a submission's withdrawal and held batch, a listing's import batch) or mostly
one value (a hash's status: active) index only the other rows; the unique payload
digest loses PostgreSQL's second, LIKE-only index (docs/decisions.md).

On PostgreSQL the change is made with statements that drop and create only indexes,
concurrently, and rename the unique constraint: Django's own operations would also drop
and re-add every foreign key, checking each against every row while holding the table's
lock, which on a large table blocks writers for minutes. Elsewhere (SQLite) Django's
operations run as usual.
"""

import django.db.models.deletion
from django.db import migrations, models

# One statement each: CONCURRENTLY runs outside a transaction, and writers are not blocked.
# Safe to run again after an interruption: an index a cut-short CREATE left invalid is
# dropped and built again, and the constraint is renamed only if it still has its old name.
POSTGRES_FORWARD = [
    "DROP INDEX CONCURRENTLY IF EXISTS hashes_hash_status_19bcf516",
    "DROP INDEX CONCURRENTLY IF EXISTS hashes_hash_status_19bcf516_like",
    "DROP INDEX CONCURRENTLY IF EXISTS hashes_listing_hash_id_74732162",
    "DROP INDEX CONCURRENTLY IF EXISTS hashes_listing_import_batch_id_aee4cc66",
    "DROP INDEX CONCURRENTLY IF EXISTS hashes_submission_hash_id_a7ea617f",
    "DROP INDEX CONCURRENTLY IF EXISTS hashes_submission_held_batch_id_444c72b7",
    "DROP INDEX CONCURRENTLY IF EXISTS hashes_submission_payload_sha256_730ac91e_like",
    "DROP INDEX CONCURRENTLY IF EXISTS hashes_submission_signing_key_id_2e9d5be2",
    "DROP INDEX CONCURRENTLY IF EXISTS hashes_submission_withdrawal_id_7b4440fe",
    "DROP INDEX CONCURRENTLY IF EXISTS hash_status_not_active_idx",
    "CREATE INDEX CONCURRENTLY hash_status_not_active_idx ON hashes_hash (status) WHERE NOT (status = 'active')",
    "DROP INDEX CONCURRENTLY IF EXISTS listing_import_batch_idx",
    "CREATE INDEX CONCURRENTLY listing_import_batch_idx ON hashes_listing (import_batch_id) WHERE import_batch_id IS NOT NULL",
    "DROP INDEX CONCURRENTLY IF EXISTS submission_withdrawal_idx",
    "CREATE INDEX CONCURRENTLY submission_withdrawal_idx ON hashes_submission (withdrawal_id) WHERE withdrawal_id IS NOT NULL",
    "DROP INDEX CONCURRENTLY IF EXISTS submission_held_batch_idx",
    "CREATE INDEX CONCURRENTLY submission_held_batch_idx ON hashes_submission (held_batch_id) WHERE held_batch_id IS NOT NULL",
    "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'hashes_submission_payload_sha256_key') THEN ALTER TABLE hashes_submission RENAME CONSTRAINT hashes_submission_payload_sha256_key TO submission_unique_payload; END IF; END $$",
]

POSTGRES_BACKWARD = [
    "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'submission_unique_payload') THEN ALTER TABLE hashes_submission RENAME CONSTRAINT submission_unique_payload TO hashes_submission_payload_sha256_key; END IF; END $$",
    "DROP INDEX CONCURRENTLY IF EXISTS submission_held_batch_idx",
    "DROP INDEX CONCURRENTLY IF EXISTS submission_withdrawal_idx",
    "DROP INDEX CONCURRENTLY IF EXISTS listing_import_batch_idx",
    "DROP INDEX CONCURRENTLY IF EXISTS hash_status_not_active_idx",
    "DROP INDEX CONCURRENTLY IF EXISTS hashes_hash_status_19bcf516",
    "CREATE INDEX CONCURRENTLY hashes_hash_status_19bcf516 ON hashes_hash (status)",
    "DROP INDEX CONCURRENTLY IF EXISTS hashes_hash_status_19bcf516_like",
    "CREATE INDEX CONCURRENTLY hashes_hash_status_19bcf516_like ON hashes_hash (status varchar_pattern_ops)",
    "DROP INDEX CONCURRENTLY IF EXISTS hashes_listing_hash_id_74732162",
    "CREATE INDEX CONCURRENTLY hashes_listing_hash_id_74732162 ON hashes_listing (hash_id)",
    "DROP INDEX CONCURRENTLY IF EXISTS hashes_listing_import_batch_id_aee4cc66",
    "CREATE INDEX CONCURRENTLY hashes_listing_import_batch_id_aee4cc66 ON hashes_listing (import_batch_id)",
    "DROP INDEX CONCURRENTLY IF EXISTS hashes_submission_hash_id_a7ea617f",
    "CREATE INDEX CONCURRENTLY hashes_submission_hash_id_a7ea617f ON hashes_submission (hash_id)",
    "DROP INDEX CONCURRENTLY IF EXISTS hashes_submission_held_batch_id_444c72b7",
    "CREATE INDEX CONCURRENTLY hashes_submission_held_batch_id_444c72b7 ON hashes_submission (held_batch_id)",
    "DROP INDEX CONCURRENTLY IF EXISTS hashes_submission_payload_sha256_730ac91e_like",
    "CREATE INDEX CONCURRENTLY hashes_submission_payload_sha256_730ac91e_like ON hashes_submission (payload_sha256 varchar_pattern_ops)",
    "DROP INDEX CONCURRENTLY IF EXISTS hashes_submission_signing_key_id_2e9d5be2",
    "CREATE INDEX CONCURRENTLY hashes_submission_signing_key_id_2e9d5be2 ON hashes_submission (signing_key_id)",
    "DROP INDEX CONCURRENTLY IF EXISTS hashes_submission_withdrawal_id_7b4440fe",
    "CREATE INDEX CONCURRENTLY hashes_submission_withdrawal_id_7b4440fe ON hashes_submission (withdrawal_id)",
]


class ByVendor(migrations.SeparateDatabaseAndState):
    """The state change of `operations`; on PostgreSQL the database change is `postgres`
    (forward) and `postgres_backward`, elsewhere the operations' own."""

    def __init__(self, operations, postgres, postgres_backward):
        super().__init__(database_operations=operations, state_operations=operations)
        self.postgres = migrations.RunSQL(postgres, postgres_backward)

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            self.postgres.database_forwards(app_label, schema_editor, from_state, to_state)
        else:
            super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            self.postgres.database_backwards(app_label, schema_editor, from_state, to_state)
        else:
            super().database_backwards(app_label, schema_editor, from_state, to_state)


class Migration(migrations.Migration):
    atomic = False  # CREATE/DROP INDEX CONCURRENTLY (README "Upgrades": no long locks)
    dependencies = [
        ("hashes", "0007_submission_relayed_in"),
        ("members", "0006_program_hold_settings"),
    ]

    operations = [
        ByVendor(
            [
                migrations.AlterField(
                    model_name="hash",
                    name="status",
                    field=models.CharField(
                        choices=[
                            ("active", "Active"),
                            ("withdrawn", "Withdrawn (no active support left)"),
                            ("quarantined", "Quarantined (disputed; excluded until an admin decides)"),
                            ("retired", "Retired by an admin"),
                            ("held", "Held for review (stored; its only submissions wait for an admin)"),
                        ],
                        default="active",
                        max_length=16,
                    ),
                ),
                migrations.AlterField(
                    model_name="listing",
                    name="hash",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="listings",
                        to="hashes.hash",
                    ),
                ),
                migrations.AlterField(
                    model_name="listing",
                    name="import_batch",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        help_text="Set when an operator's import supports the listing.",
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="listings",
                        to="hashes.importbatch",
                    ),
                ),
                migrations.AlterField(
                    model_name="submission",
                    name="hash",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="submissions",
                        to="hashes.hash",
                    ),
                ),
                migrations.AlterField(
                    model_name="submission",
                    name="held_batch",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        help_text="Set when the submission was held for review; kept after the decision.",
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="submissions",
                        to="hashes.heldbatch",
                    ),
                ),
                migrations.AlterField(
                    model_name="submission",
                    name="payload_sha256",
                    field=models.CharField(blank=True, max_length=64, null=True),
                ),
                migrations.AlterField(
                    model_name="submission",
                    name="signing_key",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        to="members.signingkey",
                    ),
                ),
                migrations.AlterField(
                    model_name="submission",
                    name="withdrawal",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="hashes.withdrawal",
                    ),
                ),
                migrations.AddIndex(
                    model_name="hash",
                    index=models.Index(
                        condition=models.Q(("status", "active"), _negated=True),
                        fields=["status"],
                        name="hash_status_not_active_idx",
                    ),
                ),
                migrations.AddIndex(
                    model_name="listing",
                    index=models.Index(
                        condition=models.Q(("import_batch__isnull", False)),
                        fields=["import_batch"],
                        name="listing_import_batch_idx",
                    ),
                ),
                migrations.AddIndex(
                    model_name="submission",
                    index=models.Index(
                        condition=models.Q(("withdrawal__isnull", False)),
                        fields=["withdrawal"],
                        name="submission_withdrawal_idx",
                    ),
                ),
                migrations.AddIndex(
                    model_name="submission",
                    index=models.Index(
                        condition=models.Q(("held_batch__isnull", False)),
                        fields=["held_batch"],
                        name="submission_held_batch_idx",
                    ),
                ),
                migrations.AddConstraint(
                    model_name="submission",
                    constraint=models.UniqueConstraint(fields=("payload_sha256",), name="submission_unique_payload"),
                ),
            ],
            POSTGRES_FORWARD,
            POSTGRES_BACKWARD,
        )
    ]
