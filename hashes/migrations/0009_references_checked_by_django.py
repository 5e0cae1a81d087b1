"""A submission's hash, program, submitter and signing key, and a listing's hash and program,
are no longer foreign-key constraints in the database; Django still refuses to delete a
row they name (PROTECT), the exchange deletes none of these rows, and the admin deletes no
hash, member or program (docs/decisions.md, "References that Django checks"). On
PostgreSQL each constraint was a query per row at commit: about 40 % of the database's
time when a new peer's bootstrap stores a million submissions.

PostgreSQL: each constraint is dropped by one ALTER TABLE, which holds the tables' locks for
a moment and reads no row. SQLite: Django copies each table anew, as for any altered field.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("hashes", "0008_fewer_indexes"),
        ("members", "0006_program_hold_settings"),
    ]

    operations = [
        migrations.AlterField(
            model_name="listing",
            name="hash",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="listings",
                to="hashes.hash",
            ),
        ),
        migrations.AlterField(
            model_name="listing",
            name="program",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="listings",
                to="members.program",
            ),
        ),
        migrations.AlterField(
            model_name="submission",
            name="hash",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="submissions",
                to="hashes.hash",
            ),
        ),
        migrations.AlterField(
            model_name="submission",
            name="program",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="submissions",
                to="members.program",
            ),
        ),
        migrations.AlterField(
            model_name="submission",
            name="signing_key",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                to="members.signingkey",
            ),
        ),
        migrations.AlterField(
            model_name="submission",
            name="submitter",
            field=models.ForeignKey(
                db_constraint=False,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="submissions",
                to="members.member",
            ),
        ),
    ]
