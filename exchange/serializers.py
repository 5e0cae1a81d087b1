"""Input and output shapes of the exchange API: feed, webhooks, server key."""

from __future__ import annotations

from rest_framework import serializers

from .feed import FEED_KINDS, MAX_LIMIT
from .models import WebhookEndpoint


class FeedQuerySerializer(serializers.Serializer):
    after = serializers.IntegerField(min_value=0, default=0, help_text="Sequence number of the last entry you have.")
    limit = serializers.IntegerField(min_value=1, max_value=MAX_LIMIT, default=1000)


class FeedEntrySerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    kind = serializers.ChoiceField(choices=FEED_KINDS)
    program = serializers.CharField(allow_null=True)
    at = serializers.CharField()
    hash = serializers.DictField(required=False, help_text="id, signal_type, value (hash entries)")
    envelopes = serializers.ListField(
        child=serializers.DictField(),
        required=False,
        help_text="The signed submission (hash.added) or withdrawal (hash.withdrawn), byte for byte.",
    )
    imported_from = serializers.CharField(required=False, allow_null=True)
    reason = serializers.CharField(required=False)
    key = serializers.DictField(required=False, help_text="key_id, member, algorithm, public_key (key entries)")


class FeedPageSerializer(serializers.Serializer):
    entries = FeedEntrySerializer(many=True)
    next = serializers.IntegerField(help_text="Pass as `after` to get the next page.")
    has_more = serializers.BooleanField()


class WebhookSerializer(serializers.ModelSerializer):
    events = serializers.ListField(
        source="event_kinds",
        child=serializers.ChoiceField(choices=FEED_KINDS),
        required=False,
        help_text="Event kinds to receive; empty or omitted means all.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "description",
            "events",
            "is_active",
            "disabled_reason",
            "disabled_at",
            "cursor_seq",
            "last_success_at",
            "last_failure_at",
            "created_at",
        ]
        read_only_fields = [
            "id",
            "disabled_reason",
            "disabled_at",
            "cursor_seq",
            "last_success_at",
            "last_failure_at",
            "created_at",
        ]


class WebhookWithSecretSerializer(WebhookSerializer):
    secret = serializers.CharField(read_only=True, help_text="whsec_… — shown once; store it now.")

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "secret"]
        read_only_fields = [*WebhookSerializer.Meta.read_only_fields, "secret"]


class RotateSecretSerializer(serializers.Serializer):
    grace_hours = serializers.IntegerField(
        min_value=0, max_value=720, default=24, help_text="Hours the old secret keeps signing too."
    )


class TestResultSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    status_code = serializers.IntegerField(allow_null=True)
    error = serializers.CharField()
    duration_ms = serializers.IntegerField()
    response_excerpt = serializers.CharField()


class ServerKeySerializer(serializers.Serializer):
    algorithm = serializers.CharField()
    public_key = serializers.CharField(help_text="Standard base64 of the raw 32-byte Ed25519 key.")
    key_id = serializers.CharField()
