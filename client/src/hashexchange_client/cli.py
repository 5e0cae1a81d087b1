"""The ``hashexchange`` command: keygen, hash, submit, withdraw, verify, register-key, me;
and ``log verify|prove|audit`` and ``report verify`` (in logcli.py, with exit codes of their own).

Each subcommand is a thin layer over the library modules, so everything it does can
also be done from Python. Files are only ever read locally; what is sent is the signed
hashes, and ``hash`` and ``verify`` never touch the network at all.

Exit codes: 0 success, 1 a failure the output explains (a file that could not be
hashed, a rejected hash, a bad signature, a server error), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from tqdm import tqdm

from . import __version__, logcli, snapshot
from .api import ApiError, Client, SubmissionResult
from .dsse import EnvelopeError, keyring, open_envelope, sign_envelope
from .hashing import (
    DEFAULT_TYPES,
    FileHashes,
    HashResult,
    hash_files,
    iter_files,
    parse_types,
)
from .journal import HELD, Journal, JournalEntry
from .keys import (
    PRIVATE_KEY_FILENAME,
    PUBLIC_KEY_FILENAME,
    SigningKeyError,
    generate_private_key,
    key_id,
    load_private_key,
    load_public_key,
    public_key_from_b64,
    public_key_to_b64,
    save_private_key,
    save_public_key,
)
from .payloads import (
    SIGNAL_TYPES,
    SUBMISSION_TYPE,
    WITHDRAWAL_TYPE,
    PayloadError,
    check_options,
    normalise_value,
    submission_payload,
    withdrawal_payload,
)

ENV_SERVER = "HASHEXCHANGE_SERVER"
ENV_API_KEY = "HASHEXCHANGE_API_KEY"
ENV_SIGNING_KEY = "HASHEXCHANGE_SIGNING_KEY"
DEFAULT_MIN_QUALITY = 50


class UsageError(Exception):
    """A missing or contradictory option, reported like argparse's own errors."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code rather than exiting, for tests."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "log_handler", None):  # log and report: exit codes of their own (logcli.py)
        return logcli.run(args.log_handler, args, parser)
    try:
        return int(args.handler(args))
    except UsageError as exc:
        parser.error(str(exc))  # exits with status 2
    except (SigningKeyError, PayloadError, ApiError, ValueError, OSError) as exc:  # SnapshotError is a ValueError
        print(f"hashexchange: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("hashexchange: interrupted", file=sys.stderr)
        return 130
    return 0  # unreachable: parser.error exits


def build_parser() -> argparse.ArgumentParser:
    """All subcommands and options, documented in docs/client.md."""
    parser = argparse.ArgumentParser(
        prog="hashexchange",
        description="Hash files on this device and exchange signed hashes. "
        "Files never leave the machine; only hashes are sent.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keygen = commands.add_parser("keygen", help="create an Ed25519 signing key pair")
    keygen.add_argument("--out", type=Path, default=Path("."), help="directory to write to")
    keygen.add_argument("--force", action="store_true", help="replace an existing key")
    keygen.set_defaults(handler=cmd_keygen)

    hash_ = commands.add_parser("hash", help="hash files locally and print the hashes")
    hash_.add_argument("paths", nargs="+", metavar="FILE|DIR")
    _add_hashing_options(hash_)
    hash_.add_argument("--json", action="store_true", help="print JSON Lines")
    hash_.set_defaults(handler=cmd_hash)

    submit = commands.add_parser("submit", help="hash, sign and submit files' hashes")
    submit.add_argument("paths", nargs="+", metavar="FILE|DIR")
    submit.add_argument("--program", required=True, help="program slug, e.g. ncii")
    submit.add_argument("--label", action="append", default=[], help="label for every hash (repeatable)")
    submit.add_argument("--case", help="case reference to attach to every hash")
    _add_hashing_options(submit)
    submit.add_argument(
        "--min-quality",
        type=int,
        default=DEFAULT_MIN_QUALITY,
        help="skip PDQ hashes below this quality (default %(default)s; "
        "lower ones come from near-blank images and match unrelated content)",
    )
    submit.add_argument("--journal", type=Path, help="JSON Lines file of confirmed items to skip")
    submit.add_argument("--batch-size", type=int, default=1000, help="envelopes per request")
    submit.add_argument(
        "--dry-run",
        action="store_true",
        help="sign but do not send; print the envelopes as JSON Lines",
    )
    _add_key_option(submit)
    _add_server_options(submit)
    submit.set_defaults(handler=cmd_submit)

    withdraw = commands.add_parser("withdraw", help="withdraw a hash you submitted")
    withdraw.add_argument("--program", required=True)
    withdraw.add_argument("--signal-type", required=True, choices=SIGNAL_TYPES)
    withdraw.add_argument("--value", required=True, help="the hash, as hex")
    withdraw.add_argument("--case")
    withdraw.add_argument("--reason")
    withdraw.add_argument("--journal", type=Path, help="record the withdrawal in this journal")
    _add_key_option(withdraw)
    _add_server_options(withdraw)
    withdraw.set_defaults(handler=cmd_withdraw)

    verify = commands.add_parser("verify", help="verify a signed envelope offline and print its payload")
    verify.add_argument("envelope", metavar="ENVELOPE_FILE", help="JSON envelope, or JSON Lines of them; - for stdin")
    verify.add_argument(
        "--public-key",
        action="append",
        required=True,
        metavar="B64|FILE",
        help="signer's public key, base64 or a .pub file (repeatable)",
    )
    verify.add_argument("--payload-type", help="require this payloadType")
    verify.set_defaults(handler=cmd_verify)

    register = commands.add_parser("register-key", help="register your public key")
    _add_key_option(register)
    _add_server_options(register)
    register.set_defaults(handler=cmd_register_key)

    me = commands.add_parser("me", help="show the member this API key belongs to")
    _add_server_options(me)
    me.set_defaults(handler=cmd_me)

    feed = commands.add_parser("feed", help="read the feed")
    feed_commands = feed.add_subparsers(dest="feed_command", required=True, metavar="FEED_COMMAND")
    bootstrap = feed_commands.add_parser(
        "bootstrap",
        help="start from the programs' signed snapshots, then read the feed from there",
        description="Download each program's snapshot (its current hashes at a sequence number), check the "
        "server's signature on its manifest, its digest and every envelope in it, write its entries, then "
        "read the feed after the snapshot and write those entries too. Apply the output in order: "
        "hash.added adds, hash.withdrawn and hash.quarantined remove, hash.restored adds back.",
    )
    bootstrap.add_argument("--program", action="append", default=[], help="a program (default: all you receive)")
    bootstrap.add_argument("--out", type=Path, required=True, help="NDJSON file to write the entries to")
    bootstrap.add_argument(
        "--cursor-file", type=Path, required=True, help="where to write the feed cursor to continue from"
    )
    bootstrap.add_argument(
        "--server-key", help="the server's public key (base64) you pinned; default: ask GET /api/v1/server-key"
    )
    bootstrap.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_server_options(bootstrap)
    bootstrap.set_defaults(handler=cmd_feed_bootstrap)

    logcli.add_commands(commands, _add_server_options)
    return parser


def _add_hashing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--types",
        default=",".join(DEFAULT_TYPES),
        help=f"comma-separated signal types from {', '.join(SIGNAL_TYPES)} "
        "(default %(default)s: PDQ for images, MD5 for videos)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="hashing processes (default: one per CPU core)",
    )


def _add_key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key",
        type=Path,
        default=Path(os.environ.get(ENV_SIGNING_KEY, PRIVATE_KEY_FILENAME)).expanduser(),
        help=f"private signing key, PEM (default ${ENV_SIGNING_KEY} or ./{PRIVATE_KEY_FILENAME})",
    )


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--server", help=f"exchange base URL (default ${ENV_SERVER})")
    parser.add_argument(
        "--api-key",
        help=f"API key (default ${ENV_API_KEY}; prefer the variable, as command lines are visible to other users)",
    )


def _client(args: argparse.Namespace) -> Client:
    server = args.server or os.environ.get(ENV_SERVER)
    api_key = args.api_key or os.environ.get(ENV_API_KEY)
    if not server:
        raise UsageError(f"no server: give --server or set {ENV_SERVER}")
    if not api_key:
        raise UsageError(f"no API key: give --api-key or set {ENV_API_KEY}")
    return Client(server, api_key)


def _types(args: argparse.Namespace) -> tuple[str, ...]:
    try:
        return parse_types(args.types)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def _jobs(args: argparse.Namespace, file_count: int) -> int:
    wanted = args.jobs if args.jobs > 0 else (os.cpu_count() or 1)
    return max(1, min(wanted, file_count))


def _files(args: argparse.Namespace) -> list[Path]:
    files = list(iter_files(args.paths))
    if not files:
        raise UsageError("no image or video files found under the given paths")
    return files


def cmd_keygen(args: argparse.Namespace) -> int:
    """Write a new key pair; the private half is created with mode 0600."""
    args.out.mkdir(parents=True, exist_ok=True)
    private_path = args.out / PRIVATE_KEY_FILENAME
    key = generate_private_key()
    save_private_key(key, private_path, overwrite=args.force)
    public_path = save_public_key(key, args.out / PUBLIC_KEY_FILENAME)
    print(f"private key: {private_path} (keep it secret; it never needs to leave this machine)")
    print(f"public key file: {public_path}")
    print(f"public key: {public_key_to_b64(key)}")
    print(f"key id: {key_id(key)}")
    return 0


def cmd_hash(args: argparse.Namespace) -> int:
    """Print hashes; nothing is sent anywhere."""
    types = _types(args)
    files = _files(args)
    failed = 0
    for outcome in hash_files(files, types, jobs=_jobs(args, len(files))):
        if outcome.error:
            failed += 1
            if args.json:
                _print_json({"path": str(outcome.path), "error": outcome.error})
            else:
                print(f"hashexchange: {outcome.error}", file=sys.stderr)
            continue
        for result in outcome.results:
            if args.json:
                _print_json(
                    {
                        "path": str(result.path),
                        "signal_type": result.signal_type,
                        "value": result.value,
                        "quality": result.quality,
                    }
                )
            else:
                quality = f"  quality={result.quality}" if result.quality is not None else ""
                print(f"{result.signal_type}:{result.value}{quality}  {result.path}")
    return 1 if failed else 0


@dataclass
class _Item:
    """One hash on its way to the server, with the file it came from."""

    result: HashResult
    envelope: dict[str, Any]


@dataclass
class _SubmitTally:
    """Counts and messages for the final summary of ``submit``."""

    files: int = 0
    failed: list[str] = field(default_factory=list)
    in_journal: int = 0
    low_quality: int = 0
    repeated: int = 0
    accepted: int = 0
    duplicates: int = 0
    held: int = 0  # stored, waiting for the clearinghouse's review before it is distributed
    rejected: list[str] = field(default_factory=list)


def cmd_submit(args: argparse.Namespace) -> int:
    """Hash, sign and send, then summarise what the server decided.

    Steps: check options and load the key (so mistakes surface before minutes of
    hashing); hash every file; drop hashes already in the journal, PDQ hashes below
    ``--min-quality`` and repeats within this run; sign one envelope per hash; send in
    batches, recording held items in the journal after each batch; print a summary.
    """
    types = _types(args)
    if not 1 <= args.batch_size <= 1000:
        raise UsageError("--batch-size must be between 1 and 1000")
    try:
        check_options(program=args.program, labels=args.label, case=args.case)
    except PayloadError as exc:
        raise UsageError(str(exc)) from exc
    client = None if args.dry_run else _client(args)
    key = load_private_key(args.key)
    if client is not None:
        types = _check_program(client, args.program, types, explicit=args.types != ",".join(DEFAULT_TYPES))
    journal = Journal(args.journal) if args.journal else None
    tally = _SubmitTally()

    files = _files(args)
    tally.files = len(files)
    hashed = hash_files(files, types, jobs=_jobs(args, len(files)))
    # disable=None hides progress bars when stderr is not a terminal (pipes, CI, tests).
    with tqdm(hashed, total=len(files), desc="hashing", unit="file", file=sys.stderr, disable=None) as progress:
        items = _sign_all(progress, args, key, journal, tally)

    if client is None:
        for item in items:
            _print_json(item.envelope)
    elif items:
        try:
            _send(client, items, args, journal, tally)
        except ApiError:
            # Show what was confirmed before the failure; main prints the error itself.
            _print_submit_summary(tally, dry_run=False, signed=len(items))
            raise
    _print_submit_summary(tally, dry_run=client is None, signed=len(items))
    return 1 if (tally.failed or tally.rejected) else 0


def _check_program(client: Client, program: str, types: tuple[str, ...], *, explicit: bool) -> tuple[str, ...]:
    """Ask the server, before any file is hashed, whether this member may submit to `program`
    and which of `types` it takes. Returns the types to hash.

    Default types the program does not take are dropped with a note; types asked for
    with --types that it does not take are an error, as is a program the member is not
    opted in to. Hashing a large folder first and then having every hash refused cost
    minutes for nothing.
    """
    states = {e.get("program"): e.get("state") for e in client.me().get("enrollments") or [] if isinstance(e, dict)}
    if states.get(program) != "opted_in":
        mine = ", ".join(f"{slug} ({state})" for slug, state in sorted(states.items())) or "none"
        if program in states:
            raise ApiError(
                f"you are {states[program]} in program {program!r}, so cannot submit to it; opt in first "
                "(POST /api/v1/enrollments). Your programs: " + mine
            )
        raise ApiError(f"you are not enrolled in a program {program!r}. Your programs: {mine}")
    accepted = next((p.get("signal_types") for p in client.programs() if p.get("slug") == program), None)
    if not isinstance(accepted, list):
        return types
    refused = [t for t in types if t not in accepted]
    if refused and explicit:
        raise UsageError(
            f"program {program!r} does not take {', '.join(refused)}; it takes {', '.join(accepted)} (--types)"
        )
    kept = tuple(t for t in types if t in accepted)
    if not kept:
        raise UsageError(f"program {program!r} takes only {', '.join(accepted)}; choose them with --types")
    if refused:
        print(f"note: program {program!r} does not take {', '.join(refused)}; not computing them", file=sys.stderr)
    return kept


def _sign_all(
    outcomes: Iterable[FileHashes],
    args: argparse.Namespace,
    key: Ed25519PrivateKey,
    journal: Journal | None,
    tally: _SubmitTally,
) -> list[_Item]:
    items: list[_Item] = []
    seen: set[tuple[str, str]] = set()
    for outcome in outcomes:
        if outcome.error:
            tally.failed.append(outcome.error)
            continue
        for result in outcome.results:
            if (result.signal_type, result.value) in seen:
                tally.repeated += 1
                continue
            seen.add((result.signal_type, result.value))
            if journal is not None and (args.program, result.signal_type, result.value) in journal:
                tally.in_journal += 1
                continue
            if result.quality is not None and result.quality < args.min_quality:
                tally.low_quality += 1
                continue
            payload = submission_payload(
                program=args.program,
                signal_type=result.signal_type,
                value=result.value,
                labels=args.label,
                quality=result.quality,
                case=args.case,
            )
            items.append(_Item(result, sign_envelope(SUBMISSION_TYPE, payload, key)))
    return items


def _send(
    client: Client,
    items: list[_Item],
    args: argparse.Namespace,
    journal: Journal | None,
    tally: _SubmitTally,
) -> None:
    with tqdm(total=len(items), desc="submitting", unit="hash", file=sys.stderr, disable=None) as progress:
        for batch in client.iter_submit((item.envelope for item in items), batch_size=args.batch_size):
            held: list[JournalEntry] = []
            for result in batch:
                item = items[result.index]
                if result.status in HELD:
                    held.append(_journal_entry(args.program, item.result, result))
                    if result.status == "accepted":
                        tally.accepted += 1
                    elif result.status == "held":
                        tally.held += 1
                    else:
                        tally.duplicates += 1
                else:
                    reason = ": ".join(part for part in (result.error_code, result.error_detail) if part)
                    tally.rejected.append(
                        f"{item.result.path} {item.result.signal_type}:{item.result.value} ({reason or result.status})"
                    )
            if journal is not None:
                journal.record(held)
            progress.update(len(batch))


def _journal_entry(program: str, hashed: HashResult, result: SubmissionResult) -> JournalEntry:
    return JournalEntry(
        program=program,
        signal_type=hashed.signal_type,
        value=hashed.value,
        status=result.status,
        hash_id=result.hash_id,
        path=str(hashed.path),
    )


def _print_submit_summary(tally: _SubmitTally, *, dry_run: bool, signed: int) -> None:
    out: TextIO = sys.stderr if dry_run else sys.stdout
    print(f"files: {tally.files} ({len(tally.failed)} could not be hashed)", file=out)
    skipped = []
    if tally.in_journal:
        skipped.append(f"{tally.in_journal} already in journal")
    if tally.low_quality:
        skipped.append(f"{tally.low_quality} PDQ below quality threshold")
    if tally.repeated:
        skipped.append(f"{tally.repeated} repeated in this run")
    if skipped:
        print(f"skipped: {', '.join(skipped)}", file=out)
    if dry_run:
        print(f"signed: {signed} envelopes (dry run, nothing sent)", file=out)
    else:
        print(
            f"accepted: {tally.accepted}, duplicate: {tally.duplicates}, rejected: {len(tally.rejected)}"
            + (f", held for review: {tally.held}" if tally.held else ""),
            file=out,
        )
    for message in tally.failed:
        print(f"  not hashed: {message}", file=out)
    for message in tally.rejected:
        print(f"  rejected: {message}", file=out)


def cmd_withdraw(args: argparse.Namespace) -> int:
    """Sign and send one withdrawal."""
    client = _client(args)
    key = load_private_key(args.key)
    payload = withdrawal_payload(
        program=args.program,
        signal_type=args.signal_type,
        value=args.value,
        case=args.case,
        reason=args.reason,
    )
    answer = client.withdraw(sign_envelope(WITHDRAWAL_TYPE, payload, key))
    print(f"withdrawn: hash {answer.get('hash_id')} is now {answer.get('status')}")
    if args.journal:
        value = normalise_value(args.signal_type, args.value)
        Journal(args.journal).record(
            [JournalEntry(args.program, args.signal_type, value, "withdrawn", answer.get("hash_id"))]
        )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Check envelopes against the given public keys, with no server involved."""
    ring = keyring([_read_public_key(text) for text in args.public_key])
    text = sys.stdin.read() if args.envelope == "-" else Path(args.envelope).read_text("utf-8")
    try:
        envelopes = _read_envelopes(text)
    except ValueError as exc:
        print(f"verification failed: {exc}", file=sys.stderr)
        return 1
    failures = 0
    for number, envelope in enumerate(envelopes, start=1):
        where = f"envelope {number}: " if len(envelopes) > 1 else ""
        try:
            verified = open_envelope(envelope, ring, args.payload_type)
        except EnvelopeError as exc:
            failures += 1
            print(f"{where}verification failed: {exc}", file=sys.stderr)
            continue
        print(f"{where}verified: {verified.payload_type} signed by key {verified.key_id}", file=sys.stderr)
        print(verified.payload.decode("utf-8", errors="replace"))
    return 1 if failures else 0


def _read_public_key(text: str) -> Ed25519PublicKey:
    path = Path(text)
    if path.is_file():
        return load_public_key(path)
    return public_key_from_b64(text)


def _read_envelopes(text: str) -> list[Any]:
    """One JSON envelope, or JSON Lines of them (as ``submit --dry-run`` prints)."""
    try:
        return [json.loads(text)]
    except ValueError:
        pass
    envelopes = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                envelopes.append(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"line {number} is not JSON: {exc}") from exc
    if not envelopes:
        raise ValueError("no envelope found")
    return envelopes


def cmd_register_key(args: argparse.Namespace) -> int:
    """Register the public half of ``--key`` with the server; a key already registered is a success.

    Safe to run again (setup scripts do): the member's keys are read first, and a key
    that is there and not revoked is reported as such instead of registered twice.
    """
    client = _client(args)
    key = load_private_key(args.key)
    local_id = key_id(key)
    known = {k.get("key_id"): k for k in client.me().get("signing_keys") or [] if isinstance(k, dict)}
    if local_id in known:
        revoked = known[local_id].get("revoked_at")
        if revoked:
            print(
                f"hashexchange: error: key {local_id} was revoked at {revoked}; "
                "make a new one (keygen --force) and register that",
                file=sys.stderr,
            )
            return 1
        print(f"already registered key id: {local_id}")
        return 0
    server_id = client.register_key(key.public_key())
    print(f"registered key id: {server_id}")
    if server_id != local_id:
        print(
            f"hashexchange: warning: the server's key id differs from the local one ({local_id})",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_me(args: argparse.Namespace) -> int:
    """Print the calling member as the server sees it."""
    _print_json(_client(args).me(), indent=2)
    return 0


RECEIVING_STATES = ("opted_in", "paused", "lapsed")


def cmd_feed_bootstrap(args: argparse.Namespace) -> int:
    """Snapshots, then the feed after the oldest of them; nothing is written unless every check passes."""
    client = _client(args)
    server_key = args.server_key or client.server_key()["public_key"]
    programs = list(args.program) or [
        e["program"] for e in client.me().get("enrollments", []) if e.get("state") in RECEIVING_STATES
    ]
    partial = args.out.with_name(args.out.name + ".partial")
    checker = snapshot.EntryChecker()
    written = {"snapshot": 0, "feed": 0}
    try:
        cursor = _bootstrap_into(client, args, programs, server_key, partial, checker, written)
    except BaseException:
        partial.unlink(missing_ok=True)  # nothing half-checked is left behind
        raise
    os.replace(partial, args.out)
    _write_text(args.cursor_file, f"{cursor}\n")
    _print_json(
        {
            "snapshot_entries": written["snapshot"],
            "feed_entries": written["feed"],
            "envelopes_verified": checker.verified,
            "cursor": cursor,
        }
    )
    return 0


def _bootstrap_into(
    client: Client,
    args: argparse.Namespace,
    programs: list[str],
    server_key: str,
    partial: Path,
    checker: snapshot.EntryChecker,
    written: dict[str, int],
) -> int:
    """Write every checked snapshot entry, then the feed after them, to `partial`; the cursor."""
    after: int | None = None
    with tempfile.TemporaryDirectory(prefix="hashexchange-snapshot-") as tmp, open(partial, "w") as out:
        for program in programs:
            found = client.snapshot(program)
            if found is None:  # none built yet: the feed from the start covers this program
                after = 0
                print(f"{program}: no snapshot yet, reading the feed from the start", file=sys.stderr)
                continue
            manifest = snapshot.verify_manifest(found["manifest"], server_key)
            if manifest.program != program:
                raise snapshot.SnapshotError(f"asked for {program!r}, the manifest is of {manifest.program!r}")
            path = Path(tmp) / f"{manifest.file}.ndjson.gz"
            with tqdm(
                total=manifest.size, unit="B", unit_scale=True, desc=f"{program} snapshot", disable=args.no_progress
            ) as bar:
                client.download(f"/api/v1/programs/{program}/snapshot/{manifest.file}", path, progress=bar.update)
            snapshot.check_file(path, manifest)
            with tqdm(total=manifest.entries, unit=" entries", desc="verified", disable=args.no_progress) as bar:
                for entry in snapshot.read_entries(path, manifest, checker=checker):
                    out.write(json.dumps(entry, separators=(",", ":")) + "\n")
                    written["snapshot"] += 1
                    bar.update()
            after = manifest.seq if after is None else min(after, manifest.seq)
        # Events after the oldest snapshot: those of programs snapshotted later are applied
        # again, which is harmless since they are applied in order.
        cursor = after or 0
        with tqdm(unit=" entries", desc="feed", disable=args.no_progress) as bar:
            for entries, next_seq in client.iter_feed(after or 0, limit=5000):
                cursor = next_seq
                for entry in entries:
                    if entry.get("kind", "").startswith("hash."):
                        checker.check(entry)
                    out.write(json.dumps(entry, separators=(",", ":")) + "\n")
                written["feed"] += len(entries)
                bar.update(len(entries))
    return cursor


def _write_text(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _print_json(value: Any, indent: int | None = None) -> None:
    print(json.dumps(value, indent=indent, ensure_ascii=False))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
