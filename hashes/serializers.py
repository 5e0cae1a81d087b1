"""Input and output shapes of the hashes API."""

from __future__ import annotations

from rest_framework import serializers

from .models import Hash, Listing, Submission


class EnvelopeSerializer(serializers.Serializer):
    """A DSSE envelope (docs/envelopes.md)."""

    payloadType = serializers.CharField()  # noqa: N815 - the DSSE field name
    payload = serializers.CharField(help_text="Standard base64 of the exact payload bytes.")
    signatures = serializers.ListField(child=serializers.DictField(), help_text='[{"keyid", "sig"}]')


class SubmissionBatchSerializer(serializers.Serializer):
    envelopes = EnvelopeSerializer(many=True)


class ItemErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    detail = serializers.CharField()


class ItemResultSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["accepted", "duplicate", "rejected"])
    hash_id = serializers.IntegerField(allow_null=True)
    submission_id = serializers.IntegerField(allow_null=True)
    error = ItemErrorSerializer(allow_null=True)


class BatchResultSerializer(serializers.Serializer):
    results = ItemResultSerializer(many=True)
    accepted = serializers.IntegerField()
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
    programs = ListingSerializer(source="visible_listings", many=True, read_only=True)
    submissions = SupportingSubmissionSerializer(source="visible_submissions", many=True, read_only=True)

    class Meta:
        model = Hash
        fields = ["id", "signal_type", "value", "status", "status_changed_at", "created_at", "programs", "submissions"]
        read_only_fields = fields
