"""The tables every stored hash writes a row into carry the indexes their queries use and
no more (hashes/migrations/0008_fewer_indexes.py, docs/decisions.md): each index is paid
on every row a submission or a new peer's bootstrap writes."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.models import ProtectedError

from hashes.models import Listing, Submission
from members.models import Program
from tests.signing import Signer, random_pdq

# (columns, unique) of every index and unique constraint besides the primary key.
EXPECTED = {
    "hashes_submission": {
        (("hash_id", "program_id", "status"), False),
        (("program_id",), False),
        (("submitter_id",), False),
        (("submitter_id", "program_id", "hash_id"), True),
        (("signing_key_id", "nonce"), True),
        (("payload_sha256",), True),
        (("withdrawal_id",), False),
        (("held_batch_id",), False),
    },
    "hashes_listing": {
        (("hash_id", "program_id"), True),
        (("program_id",), False),
        (("import_batch_id",), False),
    },
    "hashes_hash": {
        (("signal_type", "value"), True),
        (("status",), False),
    },
}
PARTIAL = {"submission_withdrawal_idx", "submission_held_batch_idx", "listing_import_batch_idx"}


def indexes(table: str) -> dict[str, tuple[tuple[str, ...], bool]]:
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, table)
    return {
        name: (tuple(info["columns"]), bool(info["unique"]))
        for name, info in found.items()
        if (info["index"] or info["unique"]) and not info["primary_key"]
    }


@pytest.mark.django_db
@pytest.mark.parametrize("table", sorted(EXPECTED))
def test_no_column_has_an_index_that_another_index_already_leads_with(table: str) -> None:
    assert set(indexes(table).values()) == EXPECTED[table]


@pytest.mark.django_db
def test_mostly_empty_columns_index_only_the_rows_that_have_a_value() -> None:
    """A submission's withdrawal and held batch, a listing's import batch, a hash's status
    other than active: partial indexes, which still serve a lookup by such a value."""
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'")
            partial = {name: "WHERE" in sql for name, sql in cursor.fetchall() if name in PARTIAL}
            assert partial == dict.fromkeys(PARTIAL, True)
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE indexname = ANY(%s)",
            [sorted(PARTIAL | {"hash_status_not_active_idx"})],
        )
        definitions = dict(cursor.fetchall())
        assert set(definitions) == PARTIAL | {"hash_status_not_active_idx"}
        assert all(" WHERE " in d for d in definitions.values())
        # The planner takes the partial index for a lookup by a withdrawal (the admin's
        # and the withdrawal path's query), once a sequential scan is not an option.
        cursor.execute("SET LOCAL enable_seqscan = off")
        query = str(Submission.objects.filter(withdrawal_id=7).only("id").query)
        cursor.execute(f"EXPLAIN {query}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "submission_withdrawal_idx" in plan


# (table, column) of each foreign key the database checks on these tables: only columns
# that are empty on nearly every row (no check is made for an empty one).
CONSTRAINED = {
    ("hashes_submission", "withdrawal_id"),
    ("hashes_submission", "held_batch_id"),
    ("hashes_listing", "import_batch_id"),
}


@pytest.mark.django_db
def test_a_rows_hash_program_submitter_and_key_are_checked_by_django_not_the_database(signer_a: Signer) -> None:
    """Each foreign key is a query per row at commit on PostgreSQL; the rows a submission
    and its listing name are never deleted, so Django alone checks them (PROTECT)."""
    with connection.cursor() as cursor:
        found = {
            (table, info["columns"][0])
            for table in ("hashes_submission", "hashes_listing")
            for info in connection.introspection.get_constraints(cursor, table).values()
            if info["foreign_key"]
        }
    assert found == CONSTRAINED
    assert signer_a.submit(signer_a.submission(random_pdq())).json()["accepted"] == 1
    submission = Submission.objects.select_related("hash", "program", "submitter", "signing_key").get()
    for row in (submission.hash, submission.program, submission.submitter, submission.signing_key):
        with pytest.raises(ProtectedError):
            row.delete()
    assert Submission.objects.filter(program=Program.objects.get(), signing_key__isnull=False).count() == 1
    assert Listing.objects.filter(hash=submission.hash).count() == 1
