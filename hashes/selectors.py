"""Reads of hashes, always scoped to the calling member."""

from __future__ import annotations

from django.db.models import Prefetch, Q
from hashexchange_client import signal_types

from members.models import Member
from members.selectors import receiving_program_ids

from .models import Hash, HashBody, Listing, Submission


def hash_for_member(*, member: Member, hash_id: int) -> Hash | None:
    """A hash the member submitted or that is listed in a program it receives, else None.

    Shown: its listings in those programs and in the programs the member submitted it
    to; the active envelopes supporting it there; and the member's own submissions.
    """
    programs = receiving_program_ids(member=member)
    # A held listing is distributed to nobody: only its own submitter sees it.
    distributed = Listing.objects.filter(program_id__in=programs).exclude(status=Listing.Status.HELD)
    row = (
        Hash.objects.filter(Q(listings__in=distributed) | Q(submissions__submitter=member), pk=hash_id)
        .distinct()
        .prefetch_related(
            Prefetch(
                "listings",
                queryset=Listing.objects.select_related("program", "import_batch").order_by("program__slug"),
            ),
            Prefetch(
                "submissions",
                queryset=Submission.objects.select_related("program", "submitter").order_by("received_at", "pk"),
            ),
        )
        .first()
    )
    if row is None:
        return None
    # A long value (vPDQ, TMK+PDQF) is keyed by its digest; members see the value itself.
    row.full_value = row.value
    if signal_types.get(row.signal_type).long_values:
        row.full_value = HashBody.objects.filter(pk=row.pk).values_list("value", flat=True).first() or row.value
    submissions = list(row.submissions.all())
    own_programs = {s.program_id for s in submissions if s.submitter_id == member.pk}
    row.visible_listings = [
        listing
        for listing in row.listings.all()
        if listing.program_id in own_programs
        or (listing.program_id in programs and listing.status != Listing.Status.HELD)
    ]
    row.visible_submissions = [
        s
        for s in submissions
        if s.submitter_id == member.pk or (s.program_id in programs and s.status == Submission.Status.ACTIVE)
    ]
    return row
