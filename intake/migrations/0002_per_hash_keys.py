"""Each hash of a case gets its own signing key; the case keeps its own key for status only.

Cases opened before keep working: their hashes' key is the case key (key_index empty),
which the status page uses to withdraw them.
"""

import django.db.models.deletion
from django.db import migrations, models


def copy_keys(apps, schema_editor):  # noqa: ANN001, ANN201
    Case = apps.get_model("intake", "Case")
    CaseHash = apps.get_model("intake", "CaseHash")
    for case in Case.objects.select_related("signing_key"):
        case.public_key = bytes(case.signing_key.public_key)
        case.save(update_fields=["public_key"])
        CaseHash.objects.filter(case=case).update(signing_key=case.signing_key)


class Migration(migrations.Migration):
    dependencies = [
        ("intake", "0001_cases"),
        ("members", "0004_enrollment_sent_through"),
    ]

    operations = [
        migrations.AddField(
            model_name="case",
            name="public_key",
            field=models.BinaryField(
                default=b"",
                help_text="Case key (raw Ed25519) for status and withdrawal requests; never sent to members.",
                max_length=32,
            ),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="casehash",
            name="signing_key",
            field=models.ForeignKey(
                help_text="Its own key, derived from the case secret; the key-to-case link is kept here only.",
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="members.signingkey",
            ),
        ),
        migrations.AddField(
            model_name="casehash",
            name="key_index",
            field=models.PositiveIntegerField(
                blank=True, help_text="Which of the case hash keys (re-derived by the browser to withdraw).", null=True
            ),
        ),
        migrations.RunPython(copy_keys, migrations.RunPython.noop),
        migrations.RemoveField(model_name="case", name="signing_key"),
    ]
