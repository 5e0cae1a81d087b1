"""Start each receiving enrollment's `sent_through` at its member's position in the log.

Before members 0004, "was this member sent the hash?" was answered from the member's
position (its feed cursor or webhook cursors) and its current enrollment. That answer
is what the new column records from now on, per program, so it starts there: nothing
that was owed before the upgrade stops being owed after it.
"""

from __future__ import annotations

from typing import Any

from django.db import migrations

RECEIVING = ("opted_in", "paused", "lapsed")


def forward(apps: Any, schema_editor: Any) -> None:
    Enrollment = apps.get_model("members", "Enrollment")
    FeedCursor = apps.get_model("exchange", "FeedCursor")
    WebhookEndpoint = apps.get_model("exchange", "WebhookEndpoint")
    position: dict[int, int] = dict(FeedCursor.objects.values_list("member_id", "last_seq"))
    for member_id, cursor, kinds in WebhookEndpoint.objects.values_list("member_id", "cursor_seq", "event_kinds"):
        if not kinds or "hash.added" in kinds:
            position[member_id] = max(position.get(member_id, 0), cursor)
    for member_id, seq in position.items():
        Enrollment.objects.filter(member_id=member_id, state__in=RECEIVING, sent_through__lt=seq).update(
            sent_through=seq
        )


class Migration(migrations.Migration):
    dependencies = [
        ("exchange", "0006_event_program_kind_time"),
        ("members", "0004_enrollment_sent_through"),
    ]
    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]
