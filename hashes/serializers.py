"""Input and output shapes of the hashes API."""

from __future__ import annotations

from typing import Any

from hashexchange_client import signal_types
from hashexchange_client.signal_types import SIGNAL_TYPE_NAMES
from rest_framework import exceptions, serializers

from .matching import Query
from .models import Hash, Listing, Submission


class SignatureSerializer(serializers.Serializer):
    """One DSSE signature."""

    keyid = serializers.CharField(
        required=False,
        allow_blank=True,
        help_text="SHA-256 (hex) of the signer's public key; optional, as DSSE allows (then every key of the "
        "submitter is tried).",
    )
    sig = serializers.CharField(help_text="Base64 of the 64-byte Ed25519 signature over PAE(payloadType, payload).")


class EnvelopeSerializer(serializers.Serializer):
    """A DSSE envelope (docs/envelopes.md)."""

    payloadType = serializers.CharField()  # noqa: N815 - the DSSE field name
    payload = serializers.CharField(help_text="Base64 of the exact payload bytes.")
    signatures = SignatureSerializer(many=True)


class SubmissionBatchSerializer(serializers.Serializer):
    envelopes = EnvelopeSerializer(many=True)


class ItemErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    detail = serializers.CharField()


class ItemResultSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["accepted", "held", "duplicate", "rejected"])
    hash_id = serializers.IntegerField(allow_null=True)
    submission_id = serializers.IntegerField(allow_null=True)
    error = ItemErrorSerializer(allow_null=True)


class BatchResultSerializer(serializers.Serializer):
    results = ItemResultSerializer(many=True)
    accepted = serializers.IntegerField()
    held = serializers.IntegerField(help_text="Stored, but held for review: distributed once an admin releases them.")
    duplicates = serializers.IntegerField()
    rejected = serializers.IntegerField()


class WithdrawalResultSerializer(serializers.Serializer):
    hash_id = serializers.IntegerField()
    withdrawal_id = serializers.IntegerField()
    status = serializers.CharField(help_text="The hash's status after the withdrawal.")
    listing_status = serializers.CharField(help_text="The hash's status in the withdrawal's program.")


class ListingSerializer(serializers.ModelSerializer):
    program = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    imported_from = serializers.CharField(
        source="import_batch.source",
        default=None,
        allow_null=True,
        read_only=True,
        help_text="Set when an operator imported the hash from another list (not signed by a member).",
    )

    class Meta:
        model = Listing
        fields = ["program", "status", "imported_from", "created_at", "changed_at"]
        read_only_fields = fields


class SupportingSubmissionSerializer(serializers.ModelSerializer):
    program = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    submitter = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Submission
        fields = ["id", "program", "submitter", "status", "signed", "source", "labels", "received_at", "envelope"]
        read_only_fields = fields


class HashSerializer(serializers.ModelSerializer):
    value = serializers.CharField(source="full_value", read_only=True, help_text="The normalised value.")
    programs = ListingSerializer(source="visible_listings", many=True, read_only=True)
    submissions = SupportingSubmissionSerializer(source="visible_submissions", many=True, read_only=True)

    class Meta:
        model = Hash
        fields = ["id", "signal_type", "value", "status", "status_changed_at", "created_at", "programs", "submissions"]
        read_only_fields = fields


# Matching -------------------------------------------------------------------------------------


class MatchQuerySerializer(serializers.Serializer):
    signal_type = serializers.ChoiceField(choices=list(SIGNAL_TYPE_NAMES))
    value = serializers.CharField(
        help_text="Hex; PDQ 64 digits, pHash/dHash 16, MD5 32, SHA-256 64; vPDQ python-threatexchange's JSON "
        "list of 'pdq_hex,quality,timestamp' frames; TMK+PDQF the feature file's hex."
    )


class MatchRequestSerializer(serializers.Serializer):
    queries = MatchQuerySerializer(many=True, help_text="Up to MATCH_QUERIES_MAX (1,000) queries.")


class MatchSerializer(serializers.Serializer):
    hash_id = serializers.IntegerField()
    signal_type = serializers.CharField()
    value = serializers.CharField()
    distance = serializers.IntegerField(
        help_text="Hamming distance (0 for exact types; vPDQ: the largest distance from a matched query frame "
        "to its nearest frame of the video)."
    )
    programs = serializers.ListField(
        child=serializers.CharField(), help_text="Your programs that list it, within their thresholds."
    )
    query_match_percent = serializers.FloatField(
        required=False, help_text="vPDQ only: the share of the query's frames that match one of the video's."
    )
    compared_match_percent = serializers.FloatField(
        required=False, help_text="vPDQ only: the share of the video's frames that match one of the query's."
    )
    full_match = serializers.BooleanField(
        required=False, help_text="vPDQ only: compared_match_percent is 80 or more as well."
    )


class MatchResultSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position of the query in the request.")
    matches = MatchSerializer(many=True, help_text="Nearest first.")
    truncated = serializers.BooleanField(help_text="More matches than MATCH_RESULTS_MAX; the nearest are shown.")


class MatchResponseSerializer(serializers.Serializer):
    results = MatchResultSerializer(many=True)
    matched = serializers.IntegerField(help_text="How many queries matched at least one hash.")


def parse_match_queries(body: Any, *, limit: int) -> list[Query]:
    """Validate a match request by hand (a DRF serializer costs ~5 ms per 1,000 items).

    Every bad item is named, DRF-style: {"queries": [{}, {"value": ["…"]}, …]} reads
    "queries[1].value: …" in the problem's detail.
    """
    items = body.get("queries") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise exceptions.ValidationError(
            {"queries": ['give a non-empty list of {"signal_type": …, "value": …} objects']}
        )
    if len(items) > limit:
        raise exceptions.ValidationError(
            {"queries": [f"at most {limit} queries per request, got {len(items)}; split the batch"]}
        )
    errors: list[dict[str, list[str]]] = []
    queries: list[Query] = []
    for item in items:
        problem: dict[str, list[str]] = {}
        if not isinstance(item, dict):
            problem["non_field_errors"] = ['each query is an object {"signal_type": …, "value": …}']
        else:
            try:
                kind = signal_types.get(item.get("signal_type"))
            except signal_types.SignalValueError as exc:
                problem["signal_type"] = [str(exc)]
            else:
                try:
                    queries.append(Query(kind.name, kind.validate(item.get("value"))))
                except signal_types.SignalValueError as exc:
                    problem["value"] = [str(exc)]
        errors.append(problem)
    if any(errors):
        raise exceptions.ValidationError({"queries": errors})
    return queries
