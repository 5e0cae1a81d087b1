"""Reads, always scoped to the calling member; and which programs a member gets what from.

The rules of who receives what are applied here and nowhere else; every outbound path
(API reads, feed, webhooks, match, facades) asks these selectors:
- a member receives nothing unless its status is active (`Member.RECEIVING_STATUSES`);
- then by enrollment state: `Enrollment.RECEIVING` may read, `PUSHED` is sent by
  webhook, `SUBMITTING` may submit and match.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from django.db import connection
from django.db.models import Prefetch, Q, QuerySet

from core import sql

from .models import ApiCredential, Enrollment, Member, Program, SigningKey


def programs_visible(*, member: Member) -> QuerySet[Program]:
    """Programs a member may see: active ones, and any it is enrolled in."""
    return (Program.objects.filter(is_active=True) | Program.objects.filter(enrollments__member=member)).distinct()


def enrollments_of(*, member: Member) -> QuerySet[Enrollment]:
    return Enrollment.objects.filter(member=member).select_related("program").order_by("program__slug")


def signing_keys_of(*, member: Member) -> QuerySet[SigningKey]:
    return SigningKey.objects.filter(member=member).order_by("-valid_from", "-pk")


def credential_by_prefix(prefix: str) -> ApiCredential | None:
    """The credential with this public prefix and its member, in one hand-written query.

    Every API request asks this first; the ORM's compilation of the same join cost more
    CPU than the database's answer (docs/benchmarks/match-api.md).
    """
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {sql.columns(ApiCredential, 'c')}, {sql.columns(Member, 'm')} "
            f"FROM {quote(ApiCredential._meta.db_table)} c JOIN {quote(Member._meta.db_table)} m "
            f"ON m.{quote('id')} = c.{quote('member_id')} WHERE c.{quote('prefix')} = %s",
            [prefix],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    credential, member = sql.instances(row, [ApiCredential, Member])
    credential.member = member  # type: ignore[attr-defined]
    return credential  # type: ignore[return-value]


def submitting_programs_list(*, member: Member) -> list[Program]:
    """`submitting_programs` as a list, in one hand-written query (the match path's first)."""
    if not member.is_active:
        return []
    quote = connection.ops.quote_name
    states = list(Enrollment.SUBMITTING)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {sql.columns(Program, 'p')} FROM {quote(Program._meta.db_table)} p "
            f"JOIN {quote(Enrollment._meta.db_table)} e ON e.{quote('program_id')} = p.{quote('id')} "
            f"WHERE e.{quote('member_id')} = %s AND e.{quote('state')} IN ({', '.join(['%s'] * len(states))})",
            [member.pk, *states],
        )
        rows = cursor.fetchall()
    return [sql.instances(row, [Program])[0] for row in rows]  # type: ignore[misc]


def receiving_program_ids(*, member: Member) -> set[int]:
    """Programs whose hashes the member may read (feed, lookups, facades)."""
    if not member.is_active:
        return set()
    return set(
        Enrollment.objects.filter(member=member, state__in=Enrollment.RECEIVING).values_list("program_id", flat=True)
    )


def receiving_program_slugs(*, member: Member) -> list[str]:
    """The slugs of the programs whose events the member's pull feed carries."""
    if not member.is_active:
        return []
    return list(
        Enrollment.objects.filter(member=member, state__in=Enrollment.RECEIVING).values_list("program__slug", flat=True)
    )


def receiving_programs(*, member: Member, only: str | None = None) -> list[Program]:
    """The programs the member receives (or just `only`, if it receives that one), by slug."""
    if not member.is_active:
        return []
    programs = Program.objects.filter(enrollments__member=member, enrollments__state__in=Enrollment.RECEIVING)
    if only is not None:
        programs = programs.filter(slug=only)
    return list(programs.order_by("slug"))


def is_receiving(*, member: Member, program: Program) -> bool:
    return (
        member.is_active
        and Enrollment.objects.filter(member=member, program=program, state__in=Enrollment.RECEIVING).exists()
    )


def receivers_by_program(*, program_ids: Iterable[int]) -> dict[int, set[int]]:
    """{program id: ids of the members that receive it} for the given programs."""
    found: dict[int, set[int]] = defaultdict(set)
    for member_id, program_id in Enrollment.objects.filter(
        program_id__in=set(program_ids), state__in=Enrollment.RECEIVING, member__status__in=Member.RECEIVING_STATUSES
    ).values_list("member_id", "program_id"):
        found[program_id].add(member_id)
    return found


def pushed_program_slugs(*, member: Member) -> list[str]:
    """The slugs of the programs whose new hashes the member's webhooks are sent."""
    if not member.is_active:
        return []
    return list(
        Enrollment.objects.filter(member=member, state__in=Enrollment.PUSHED).values_list("program__slug", flat=True)
    )


def submitting_program_ids(*, member: Member) -> set[int]:
    """Programs the member may submit to and match against."""
    if not member.is_active:
        return set()
    return set(
        Enrollment.objects.filter(member=member, state__in=Enrollment.SUBMITTING).values_list("program_id", flat=True)
    )


def submitting_programs(*, member: Member) -> QuerySet[Program]:
    if not member.is_active:
        return Program.objects.none()
    return Program.objects.filter(enrollments__member=member, enrollments__state__in=Enrollment.SUBMITTING)


def is_submitting(*, member: Member, program: Program) -> bool:
    return (
        member.is_active
        and Enrollment.objects.filter(member=member, program=program, state__in=Enrollment.SUBMITTING).exists()
    )


def programs_by_slug() -> dict[str, Program]:
    return {p.slug: p for p in Program.objects.all()}


def program_by_slug(slug: str) -> Program | None:
    return Program.objects.filter(slug=slug).first()


def receiving_member_q(prefix: str = "member__") -> Q:
    """The member-status half of the rule, as a filter on rows that belong to a member."""
    return Q(**{f"{prefix}status__in": Member.RECEIVING_STATUSES})


def sent_through_of(*, member: Member) -> dict[int, int]:
    """{program id: sent_through} for every program the member has an enrollment in."""
    return dict(Enrollment.objects.filter(member=member).values_list("program_id", "sent_through"))


def tombstone_programs(*, member: Member, pushed: bool = False) -> dict[str, int]:
    """Programs the member no longer receives but was sent hashes of: {slug: sent_through}.

    Whoever was sent a hash is told when it is withdrawn or quarantined, whatever its
    enrollment now; the feed (`pushed=False`) and webhooks (`pushed=True`) add these
    programs' tombstones for hashes distributed up to `sent_through`. A member that is
    not active receives nothing, tombstones included, until it is active again.
    """
    if not member.is_active:
        return {}
    receiving = Enrollment.PUSHED if pushed else Enrollment.RECEIVING
    return dict(
        Enrollment.objects.filter(member=member, sent_through__gt=0)
        .exclude(state__in=receiving)
        .values_list("program__slug", "sent_through")
    )


def pushed_programs_and_tombstones(*, member: Member) -> tuple[list[str], dict[str, int]]:
    """`pushed_program_slugs` and `tombstone_programs(pushed=True)` in one query: what a
    webhook delivery needs before every POST."""
    if not member.is_active:
        return [], {}
    rows = Enrollment.objects.filter(Q(state__in=Enrollment.PUSHED) | Q(sent_through__gt=0), member=member)
    pushed, tombstones = [], {}
    for slug, state, sent_through in rows.values_list("program__slug", "state", "sent_through"):
        if state in Enrollment.PUSHED:
            pushed.append(slug)
        elif sent_through > 0:
            tombstones[slug] = sent_through
    return pushed, tombstones


def pushed_programs_and_tombstones_of(*, members: Iterable[Member]) -> dict[int, tuple[list[str], dict[str, int]]]:
    """`pushed_programs_and_tombstones` for several members in one query (webhook delivery
    to a group of endpoints): {member id: (pushed, tombstones)}, for the members that are
    active (`Member.RECEIVING_STATUSES`, read from the database now, not from the objects
    given); a member that is not is absent and receives nothing."""
    ids = {member.pk for member in members}
    if not ids:
        return {}
    found: dict[int, tuple[list[str], dict[str, int]]] = {
        member_id: ([], {})
        for member_id in Member.objects.filter(pk__in=ids, status__in=Member.RECEIVING_STATUSES).values_list(
            "pk", flat=True
        )
    }
    if not found:
        return found
    rows = Enrollment.objects.filter(Q(state__in=Enrollment.PUSHED) | Q(sent_through__gt=0), member_id__in=list(found))
    for member_id, slug, state, sent_through in rows.values_list("member_id", "program__slug", "state", "sent_through"):
        pushed, tombstones = found[member_id]
        if state in Enrollment.PUSHED:
            pushed.append(slug)
        elif sent_through > 0:
            tombstones[slug] = sent_through
    return found


def sent_through_by_program(
    *, program_ids: Iterable[int], kinds: Iterable[str] | None = None
) -> dict[int, dict[int, int]]:
    """{program id: {member id: sent_through}} for every member ever sent hashes of these
    programs (of the given kinds), whatever its enrollment or status now."""
    found: dict[int, dict[int, int]] = defaultdict(dict)
    rows = Enrollment.objects.filter(program_id__in=set(program_ids), sent_through__gt=0)
    if kinds is not None:
        rows = rows.filter(member__kind__in=list(kinds))
    for member_id, program_id, through in rows.values_list("member_id", "program_id", "sent_through"):
        found[program_id][member_id] = through
    return found


def programs_all() -> list[Program]:
    """Every program, by slug, active or not: what operators pick from."""
    return list(Program.objects.order_by("slug"))


def member_by_slug(slug: str) -> Member | None:
    return Member.objects.filter(slug=slug).first()


def member_profile(*, member: Member) -> Member:
    """The member read afresh with its enrollments and signing keys (`GET /api/v1/me`)."""
    return (
        Member.objects.filter(pk=member.pk)
        .prefetch_related(
            Prefetch("enrollments", queryset=enrollments_of(member=member)),
            Prefetch("signing_keys", queryset=signing_keys_of(member=member)),
        )
        .get()
    )
