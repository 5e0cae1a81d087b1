"""Input and output shapes of the members API."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from hashexchange_client.signal_types import SIGNAL_TYPE_NAMES
from rest_framework import serializers

from .models import ApiCredential, Enrollment, Member, Program, SigningKey
from .services import MEMBER_SETTABLE_STATES


class ProgramSerializer(serializers.ModelSerializer):
    signal_types = serializers.ListField(
        child=serializers.ChoiceField(choices=list(SIGNAL_TYPE_NAMES)),
        read_only=True,
        help_text="The signal types it accepts.",
    )
    thresholds = serializers.DictField(
        child=serializers.IntegerField(),
        read_only=True,
        help_text="Match threshold (Hamming distance) per signal type.",
    )

    class Meta:
        model = Program
        fields = [
            "slug",
            "name",
            "description",
            "signal_types",
            "thresholds",
            "min_pdq_quality",
            "removal_deadline_hours",
            "is_active",
            "share_feedback",
            "dispute_threshold",
            "lapse_after_days",
        ]
        read_only_fields = fields


class SigningKeySerializer(serializers.ModelSerializer):
    public_key = serializers.CharField(source="public_key_b64", read_only=True)

    class Meta:
        model = SigningKey
        fields = ["key_id", "algorithm", "public_key", "label", "valid_from", "revoked_at", "revocation_reason"]
        read_only_fields = fields


class SigningKeyCreateSerializer(serializers.Serializer):
    public_key = serializers.CharField(help_text="Raw 32-byte Ed25519 public key, standard base64.")
    algorithm = serializers.ChoiceField(choices=["ed25519"], default="ed25519")
    label = serializers.CharField(max_length=100, required=False, default="", allow_blank=True)


class RevokeSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


class EnrollmentSerializer(serializers.ModelSerializer):
    program = serializers.SlugRelatedField(slug_field="slug", read_only=True)

    class Meta:
        model = Enrollment
        fields = ["program", "state", "reason", "changed_at", "created_at"]
        read_only_fields = fields


class EnrollmentSetSerializer(serializers.Serializer):
    program = serializers.SlugField(help_text="Slug of the program, see GET /api/v1/programs.")
    state = serializers.ChoiceField(
        choices=[(state.value, state.label) for state in MEMBER_SETTABLE_STATES],
        default="opted_in",
        help_text="`lapsed` is set only by the system.",
    )
    reason = serializers.CharField(max_length=500, required=False, default="", allow_blank=True)


class CredentialSerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiCredential
        fields = ["prefix", "name", "scopes", "created_at", "expires_at", "last_used_at"]
        read_only_fields = fields


class MeSerializer(serializers.ModelSerializer):
    credential = serializers.SerializerMethodField(help_text="The API key used for this request.")
    enrollments = EnrollmentSerializer(many=True, read_only=True)
    signing_keys = SigningKeySerializer(many=True, read_only=True)

    class Meta:
        model = Member
        fields = ["slug", "name", "kind", "status", "credential", "enrollments", "signing_keys"]
        read_only_fields = fields

    @extend_schema_field(CredentialSerializer)
    def get_credential(self, member: Member) -> dict[str, object]:
        return CredentialSerializer(self.context["request"].auth).data
