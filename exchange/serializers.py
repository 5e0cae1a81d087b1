"""Input and output shapes of the exchange API: feed, webhooks, outcomes, reports, events."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone
from hashexchange_client.signal_types import SIGNAL_TYPE_NAMES
from rest_framework import serializers

from core.sql import BIGINT_MAX
from hashes.serializers import EnvelopeSerializer, HashSerializer, ItemErrorSerializer

from .feed import FEED_KINDS, MAX_LIMIT
from .models import Dispute, Outcome, WebhookEndpoint

OBLIGATION_STATUSES = ["open", "overdue", "fulfilled", "fulfilled_late"]
OBLIGATION_FILTERS = ["open", "overdue", "fulfilled", "all"]
ITEM_STATUSES = ["accepted", "duplicate", "rejected"]


class FeedQuerySerializer(serializers.Serializer):
    after = serializers.IntegerField(
        min_value=0, max_value=BIGINT_MAX, default=0, help_text="Sequence number of the last entry you have."
    )
    limit = serializers.IntegerField(min_value=1, max_value=MAX_LIMIT, default=1000)


class FeedHashSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    signal_type = serializers.ChoiceField(choices=list(SIGNAL_TYPE_NAMES))
    value = serializers.CharField(help_text="Lowercase hex.")


class FeedKeySerializer(serializers.Serializer):
    key_id = serializers.CharField(help_text="SHA-256 (hex) of the public key: the `keyid` in envelopes.")
    member = serializers.CharField(help_text="The member the key belongs to.")
    algorithm = serializers.CharField(required=False, help_text="key.registered: ed25519")
    public_key = serializers.CharField(required=False, help_text="key.registered: base64 of the raw 32-byte key")
    valid_from = serializers.CharField(required=False, help_text="key.registered")
    revoked_at = serializers.CharField(required=False, help_text="key.revoked: signatures made before stay valid")


class FeedbackCountsSerializer(serializers.Serializer):
    """Reports of each outcome kind on one hash in one program, and how many members made them."""

    members = serializers.IntegerField()

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        for kind in Outcome.Kind.values:
            fields[kind] = serializers.IntegerField()
        return fields


class FeedEntrySerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    leaf_index = serializers.IntegerField(
        help_text="The event's position in the audit log's tree (seq - 1): ask /api/v1/log/proof/inclusion for it."
    )
    kind = serializers.ChoiceField(choices=FEED_KINDS)
    program = serializers.CharField(allow_null=True)
    at = serializers.CharField()
    hash = FeedHashSerializer(required=False, help_text="Hash entries: the hash.")
    envelopes = EnvelopeSerializer(
        many=True,
        required=False,
        help_text="The signed submission (hash.added) or withdrawal (hash.withdrawn), byte for byte.",
    )
    signed = serializers.BooleanField(
        required=False, help_text="hash.added: false for imports and facades' unsigned submissions (no envelope)."
    )
    imported_from = serializers.CharField(required=False, allow_null=True)
    case = serializers.CharField(
        required=False,
        help_text="Hashes a person sent through the intake: your own pseudonym of their case (a UUID). Every hash "
        "of one case has the same one for you; another member sees another, so members cannot join on it.",
    )
    origin = serializers.DictField(
        required=False,
        allow_null=True,
        help_text="Signed hashes and withdrawals: origin server (key id and public key), origin member and program, "
        "the path of servers (origin first), and the origin server's signed key binding (docs/federation.md).",
    )
    reason = serializers.CharField(required=False)
    key = FeedKeySerializer(required=False, help_text="Key entries: the key.")
    feedback = FeedbackCountsSerializer(
        required=False, help_text="Hash entries in programs that share feedback, once a member reported on the hash."
    )


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


class WebhookCreateSerializer(WebhookSerializer):
    after = serializers.IntegerField(
        required=False,
        min_value=0,
        help_text="Send the events after this sequence number, as the feed's `after`: 0 for every event "
        "you may see, including those from before the endpoint existed. Omitted: from now on.",
    )

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "after"]


class WebhookWithSecretSerializer(WebhookSerializer):
    secret = serializers.CharField(read_only=True, help_text="whsec_… — shown once; store it now.")
    starts_after = serializers.IntegerField(
        source="cursor_seq",
        read_only=True,
        help_text="The endpoint receives the events after this sequence number (`after`, or the newest "
        "event when the endpoint was made); read the feed up to it for anything earlier.",
    )

    class Meta(WebhookSerializer.Meta):
        fields = [*WebhookSerializer.Meta.fields, "starts_after", "secret"]
        read_only_fields = [*WebhookSerializer.Meta.read_only_fields, "starts_after", "secret"]


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
    whpk = serializers.CharField(help_text="The same key as Standard Webhooks writes it: whpk_ + base64.")
    key_id = serializers.CharField()
    log_origin = serializers.CharField(help_text="The audit log's origin: the name in its checkpoints.")
    log_vkey = serializers.CharField(
        help_text="The key that signs checkpoints, as a signed-note verifier key (<origin>+<key id>+<base64>)."
    )


class SnapshotSerializer(serializers.Serializer):
    program = serializers.CharField()
    seq = serializers.IntegerField(help_text="The sequence number it is consistent at: read the feed with after=seq.")
    entries = serializers.IntegerField(help_text="Lines in the file: one hash.added entry per listed hash.")
    bytes = serializers.IntegerField(help_text="Size of the gzip file.")
    sha256 = serializers.CharField(help_text="SHA-256 (hex) of the gzip file, as the manifest signs it.")
    created_at = serializers.CharField()
    file = serializers.CharField()
    url = serializers.CharField(help_text="Where to GET the gzip-compressed NDJSON entries.")
    manifest = serializers.DictField(
        help_text="DSSE envelope (application/vnd.hashexchange.snapshot+json) signed with the server key; "
        "its payload repeats program, seq, entries, bytes, sha256, created_at, file and names the server."
    )


# The audit log -----------------------------------------------------------------------------


class InclusionQuerySerializer(serializers.Serializer):
    leaf_index = serializers.IntegerField(min_value=0, required=False, help_text="The event's leaf index (seq - 1).")
    seq = serializers.IntegerField(min_value=1, required=False, help_text="Or the event's sequence number.")
    tree_size = serializers.IntegerField(
        min_value=1, required=False, help_text="A checkpointed tree size; the latest checkpoint's by default."
    )

    def validate(self, attrs: dict) -> dict:
        if ("leaf_index" in attrs) == ("seq" in attrs):
            raise serializers.ValidationError({"leaf_index": ["give the event's leaf_index or its seq (one of them)"]})
        if "seq" in attrs:
            attrs["leaf_index"] = attrs.pop("seq") - 1
        return attrs


class EntriesQuerySerializer(serializers.Serializer):
    start = serializers.IntegerField(min_value=0, help_text="The first leaf index (seq - 1) to serve.")
    end = serializers.IntegerField(
        min_value=1, help_text="The leaf index after the last one to serve; at most the tree size, and start + 65536."
    )


class InclusionProofSerializer(serializers.Serializer):
    leaf_index = serializers.IntegerField()
    seq = serializers.IntegerField()
    tree_size = serializers.IntegerField()
    leaf_data = serializers.CharField(
        help_text="The event's leaf data: the canonical JSON whose RFC 6962 leaf hash is in the tree (docs/ledger.md)."
    )
    leaf_hash = serializers.CharField(help_text="The event's leaf hash, hex (as in the event log).")
    root_hash = serializers.CharField(help_text="The tree's root, base64 (as in the checkpoint).")
    proof = serializers.ListField(child=serializers.CharField(), help_text="RFC 6962 audit path, base64, leaf first.")
    checkpoint = serializers.CharField(
        allow_null=True, help_text="The signed checkpoint of tree_size with its cosignatures (null if none)."
    )


class ConsistencyQuerySerializer(serializers.Serializer):
    first = serializers.IntegerField(min_value=0, help_text="The smaller tree size (one you hold a checkpoint of).")
    second = serializers.IntegerField(
        min_value=1, required=False, help_text="The larger, checkpointed, size; the latest checkpoint's by default."
    )


class ConsistencyProofSerializer(serializers.Serializer):
    first = serializers.IntegerField()
    second = serializers.IntegerField()
    first_root_hash = serializers.CharField()
    second_root_hash = serializers.CharField()
    proof = serializers.ListField(child=serializers.CharField(), help_text="RFC 6962 consistency proof, base64.")
    checkpoint = serializers.CharField(allow_null=True, help_text="The signed checkpoint of `second`.")


class OutcomeItemSerializer(serializers.Serializer):
    """One report: name the hash by id, or by signal type and value."""

    hash_id = serializers.IntegerField(required=False)
    signal_type = serializers.CharField(required=False)
    value = serializers.CharField(required=False)
    program = serializers.SlugField()
    kind = serializers.ChoiceField(choices=Outcome.Kind.values)
    occurred_at = serializers.DateTimeField()
    count = serializers.IntegerField(min_value=1, default=1)
    tags = serializers.ListField(child=serializers.CharField(), required=False)
    client_ref = serializers.CharField(help_text="Your id for this report; sending it again is a no-op.")


class OutcomeBatchSerializer(serializers.Serializer):
    outcomes = OutcomeItemSerializer(many=True)


class OutcomeResultSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    status = serializers.ChoiceField(choices=ITEM_STATUSES)
    outcome_id = serializers.IntegerField(allow_null=True)
    hash_id = serializers.IntegerField(allow_null=True)
    error = ItemErrorSerializer(allow_null=True)


class OutcomeBatchResultSerializer(serializers.Serializer):
    results = OutcomeResultSerializer(many=True)
    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    rejected = serializers.IntegerField()


class ObligationSerializer(serializers.Serializer):
    hash_id = serializers.IntegerField()
    signal_type = serializers.CharField(source="hash.signal_type")
    value = serializers.CharField(source="hash.value")
    program = serializers.CharField(source="program.slug")
    kind = serializers.CharField()
    status = serializers.ChoiceField(choices=OBLIGATION_STATUSES)
    created_at = serializers.DateTimeField()
    due_at = serializers.DateTimeField()
    fulfilled_at = serializers.DateTimeField(allow_null=True)


class ObligationQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=OBLIGATION_FILTERS, default="all")
    program = serializers.SlugField(required=False)


class PeriodSerializer(serializers.Serializer):
    """`from` and `to` as dates or RFC 3339 times; the default is the last 30 days."""

    start = serializers.DateTimeField(
        required=False, input_formats=["iso-8601", "%Y-%m-%d"], help_text="`from`: start of the period (inclusive)."
    )
    end = serializers.DateTimeField(
        required=False, input_formats=["iso-8601", "%Y-%m-%d"], help_text="`to`: end of the period (exclusive)."
    )
    format = serializers.ChoiceField(choices=["json", "csv"], default="json")

    def to_internal_value(self, data: Any) -> Any:
        renamed = {"start": data.get("from"), "end": data.get("to"), "format": data.get("format")}
        try:
            return super().to_internal_value({k: v for k, v in renamed.items() if v not in (None, "")})
        except serializers.ValidationError as exc:
            raise serializers.ValidationError(
                {{"start": "from", "end": "to"}.get(k, k): v for k, v in exc.detail.items()}
            ) from None

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        end = attrs.get("end") or timezone.now()
        try:
            start = attrs.get("start") or end - dt.timedelta(days=30)
        except OverflowError:  # `to` in the first 30 days of the year 1
            raise serializers.ValidationError(
                {"from": ["`to` leaves no room for the default 30 days before it; give `from` too"]}
            ) from None
        if start >= end:
            raise serializers.ValidationError({"from": ["`from` must be before `to`"]})
        return {**attrs, "start": start, "end": end}


class EventRefSerializer(serializers.Serializer):
    type = serializers.CharField()
    id = serializers.CharField()


class EventSerializer(serializers.Serializer):
    seq = serializers.IntegerField()
    leaf_index = serializers.IntegerField(help_text="The event's position in the audit log's tree (seq - 1).")
    kind = serializers.CharField()
    program = serializers.CharField()
    subject = EventRefSerializer(help_text="What the event is about.")
    actor = EventRefSerializer(help_text="Who caused it: a member, an admin, the system.")
    data = serializers.DictField(help_text="What the event records; its fields depend on `kind` (docs/ledger.md).")
    at = serializers.CharField()
    leaf_hash = serializers.CharField()


class EventPageSerializer(serializers.Serializer):
    events = EventSerializer(many=True)
    next = serializers.IntegerField()
    has_more = serializers.BooleanField()


class DisputeSerializer(serializers.Serializer):
    program = serializers.CharField()
    status = serializers.ChoiceField(choices=Dispute.Status.values)
    reporters = serializers.IntegerField(help_text="Members that reported the hash as not violating.")
    opened_at = serializers.CharField()
    decided_at = serializers.CharField(allow_null=True)


class HashDetailSerializer(HashSerializer):
    feedback = serializers.DictField(
        child=FeedbackCountsSerializer(),
        help_text="Per program that shares feedback: reports of each outcome kind and how many members reported.",
    )
    disputes = DisputeSerializer(many=True, source="visible_disputes")

    class Meta(HashSerializer.Meta):
        fields = [*HashSerializer.Meta.fields, "feedback", "disputes"]


# Reports (exchange/reports.py): shapes for the schema; the views answer the dicts as built.


def _counts(*names: str) -> dict[str, serializers.Field]:
    return {name: serializers.IntegerField() for name in names}


def _hours(*names: str) -> dict[str, serializers.Field]:
    return {name: serializers.FloatField(allow_null=True, help_text="Hours; null when nothing was counted.")
            for name in names}  # fmt: skip


class _Fields(serializers.Serializer):
    """A serializer whose fields come from `extra()` (names that are not identifiers, or built from a table)."""

    def extra(self) -> dict[str, serializers.Field]:
        return {}

    def get_fields(self) -> dict[str, serializers.Field]:
        return {**super().get_fields(), **self.extra()}


class ReportFeedSerializer(serializers.Serializer):
    last_read_at = serializers.CharField(allow_null=True)
    position = serializers.IntegerField(help_text="The member's position in the log: feed cursor or furthest webhook.")
    unread_since = serializers.CharField(allow_null=True, help_text="Time of the oldest program event past it.")
    lag_seconds = serializers.IntegerField()


class ReportWebhooksSerializer(serializers.Serializer):
    attempts = serializers.IntegerField()
    succeeded = serializers.IntegerField()
    success_rate = serializers.FloatField(allow_null=True)


class ReportOutcomesSerializer(_Fields):
    """Outcomes reported in the period, by kind."""

    items = serializers.IntegerField(help_text="Items the reports concerned (sum of their counts).")

    def extra(self) -> dict[str, serializers.Field]:
        return _counts(*Outcome.Kind.values)


class ReportMatchApiSerializer(serializers.Serializer):
    matches = serializers.IntegerField()


class ReportRemovalsSerializer(_Fields):
    """Removals reported in the period and how long after distribution they came."""

    count = serializers.IntegerField()
    within_deadline = serializers.IntegerField()
    share_within_deadline = serializers.FloatField(allow_null=True)

    def extra(self) -> dict[str, serializers.Field]:
        return _hours("p50_hours", "p90_hours", "max_hours")


class ReportWithdrawalsSerializer(_Fields):
    """Acknowledgements owed for withdrawals, and how long they took."""

    def extra(self) -> dict[str, serializers.Field]:
        return {
            **_counts("owed", "acknowledged", "on_time", "open", "overdue"),
            **_hours("ack_p50_hours", "ack_p90_hours", "ack_max_hours"),
        }


class ReportRowSerializer(serializers.Serializer):
    """One enrolled (member, program) pair over the period."""

    member = serializers.CharField()
    program = serializers.CharField()
    enrollment = serializers.CharField(help_text="The enrollment's state.")
    enrollment_reason = serializers.CharField(allow_blank=True)
    feed = ReportFeedSerializer()
    webhooks = ReportWebhooksSerializer()
    outcomes = ReportOutcomesSerializer()
    match_api = ReportMatchApiSerializer()
    removals = ReportRemovalsSerializer()
    withdrawals = ReportWithdrawalsSerializer()


class ReportHashesSerializer(serializers.Serializer):
    distributed = serializers.IntegerField()
    imported = serializers.IntegerField()
    withdrawn = serializers.IntegerField()
    quarantined = serializers.IntegerField()
    restored = serializers.IntegerField()


class ReportDisputesSerializer(serializers.Serializer):
    opened = serializers.IntegerField()
    restored = serializers.IntegerField()
    retired = serializers.IntegerField()
    open_now = serializers.IntegerField()


class _PeriodFields(_Fields):
    """A report's period: `from` and `to`."""

    def extra(self) -> dict[str, serializers.Field]:
        return {"from": serializers.CharField(), "to": serializers.CharField()}


class ProgramReportSerializer(_PeriodFields):
    """A program over a period (`from`, `to`): its hashes, disputes and each member's figures."""

    program = serializers.CharField()
    removal_deadline_hours = serializers.IntegerField()
    hashes = ReportHashesSerializer()
    disputes = ReportDisputesSerializer()
    members = ReportRowSerializer(many=True)
    intake = serializers.DictField(
        required=False,
        help_text="Where the intake routes to this program: cases_opened, cases_withdrawn, hashes_sent, "
        "hashes_withdrawn in the period, and refusals by reason (`refused`: of requests for this program; "
        "`refused_before_routing`: of requests not yet tied to a program, the same in every program's report). "
        "Counts only.",
    )


class MemberReportSerializer(_PeriodFields):
    """A member over a period (`from`, `to`): its figures in each program it is enrolled in."""

    member = serializers.CharField()
    kind = serializers.CharField()
    status = serializers.CharField()
    programs = ReportRowSerializer(many=True)
