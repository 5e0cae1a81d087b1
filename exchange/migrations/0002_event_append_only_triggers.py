"""Make the database itself refuse to change events, not only the ORM.

PostgreSQL refuses UPDATE and DELETE; TRUNCATE stays possible for the test runner's
flush (operators revoke it from the application role, see docs/deployment.md).
SQLite refuses UPDATE; DELETE stays possible because Django's test flush needs it there.
"""

from __future__ import annotations

from django.db import migrations

from . import _append_only as append_only


class Migration(migrations.Migration):
    dependencies = [("exchange", "0001_initial")]
    operations = [append_only.triggers("exchange_event", "events")]
