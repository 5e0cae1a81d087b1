"""The audit log's signed checkpoints, the witnesses that cosign them, and their cosignatures."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("exchange", "0008_tree_hashes"),
    ]

    operations = [
        migrations.CreateModel(
            name="Witness",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "name",
                    models.CharField(
                        blank=True,
                        help_text=(
                            "The witness's key name, e.g. witness.example/w1 "
                            "(taken from its verifier key if you give one)."
                        ),
                        max_length=200,
                        unique=True,
                    ),
                ),
                (
                    "public_key",
                    models.CharField(
                        help_text=(
                            "The witness's Ed25519 cosigning key: base64 of 32 bytes, or its verifier key "
                            "(<name>+<key id>+<base64>); stored as base64."
                        ),
                        max_length=300,
                    ),
                ),
                (
                    "url",
                    models.URLField(
                        help_text="Its submission prefix: we POST to <url>/add-checkpoint.", max_length=500
                    ),
                ),
                ("is_active", models.BooleanField(default=True)),
                (
                    "last_size",
                    models.BigIntegerField(default=0, help_text="The size of the last checkpoint it cosigned for us."),
                ),
                ("last_success_at", models.DateTimeField(blank=True, null=True)),
                ("last_failure_at", models.DateTimeField(blank=True, null=True)),
                ("last_error", models.CharField(blank=True, default="", max_length=500)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                "verbose_name_plural": "witnesses",
                "ordering": ["name"],
            },
        ),
        migrations.CreateModel(
            name="Checkpoint",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "origin",
                    models.CharField(help_text="The log's name, and the key name of its signature.", max_length=200),
                ),
                ("size", models.BigIntegerField(help_text="Number of events (leaves) the tree head covers.")),
                ("root_hash", models.BinaryField(max_length=32)),
                (
                    "note",
                    models.TextField(help_text="The checkpoint as a signed note, with the server's signature only."),
                ),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                "ordering": ["-size"],
                "constraints": [
                    models.UniqueConstraint(fields=("origin", "size"), name="checkpoint_unique_origin_size")
                ],
            },
        ),
        migrations.CreateModel(
            name="Cosignature",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("line", models.TextField(help_text="The note signature line, as the witness sent it.")),
                ("signed_at", models.DateTimeField(help_text="The time the witness states it cosigned.")),
                ("received_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "checkpoint",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="cosignatures",
                        to="exchange.checkpoint",
                    ),
                ),
                (
                    "witness",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="cosignatures", to="exchange.witness"
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("checkpoint", "witness"), name="cosignature_unique_checkpoint_witness"
                    )
                ],
            },
        ),
    ]
