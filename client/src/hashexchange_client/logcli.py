"""``hashexchange log verify|prove|audit`` and ``hashexchange report verify``.

Checking the exchange's audit log with nothing but its key (docs/auditlog.md). Exit codes
a script can act on:

- 0: verified;
- 1: verification failed: a signature, a proof, an entry or a report is not what it
  claims (the log forked, shrank or was rewritten, or a file was changed): an alarm;
- 2: usage error (a missing or malformed option, such as the log key);
- 3: could not check: the server could not be reached or refused (nothing was verified,
  nothing failed: try again).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

from tqdm import tqdm

from .api import ApiError, Client
from .auditlog import (
    LogVerificationError,
    Policy,
    State,
    audit,
    check_extends,
    load_state,
    parse_log_key,
    parse_witness_key,
    save_state,
    verify_report,
    verify_tlog_proof,
)
from .encoding import b64decode
from .note import Checkpoint, Verifier

ENV_LOG_KEY = "HASHEXCHANGE_LOG_KEY"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNCHECKED = 0, 1, 2, 3


def add_commands(commands: Any, add_server_options: Any) -> None:
    """Register `log` and `report` on the main parser's subcommands."""
    log = commands.add_parser("log", help="verify the exchange's audit log: checkpoints, proofs, audits")
    log_commands = log.add_subparsers(dest="log_command", required=True, metavar="COMMAND")

    verify = log_commands.add_parser(
        "verify",
        help="verify the latest checkpoint (and that it extends the last one verified), or a saved proof",
        description="Without --proof: fetch the latest checkpoint, verify its signature (and witness "
        "cosignatures), and with --state check that it extends the checkpoint verified last time. "
        "With --proof: verify a .tlog-proof file offline.",
    )
    verify.add_argument("--proof", type=Path, help="a .tlog-proof file to verify offline (from `log prove`)")
    verify.add_argument("--checkpoint", type=Path, help="a checkpoint file to verify offline")
    _add_policy_options(verify)
    _add_state_option(verify)
    add_server_options(verify)
    verify.set_defaults(log_handler=cmd_log_verify)

    prove = log_commands.add_parser(
        "prove",
        help="fetch and verify the inclusion proof of an event, and save it as a .tlog-proof file",
    )
    which = prove.add_mutually_exclusive_group(required=True)
    which.add_argument("--seq", type=int, help="the event's sequence number (as in feed entries)")
    which.add_argument("--leaf-index", type=int, help="the event's leaf index (seq - 1)")
    prove.add_argument("--tree-size", type=int, help="a checkpointed tree size (default: the latest checkpoint)")
    prove.add_argument("--out", type=Path, help="write the proof here (default: standard output)")
    _add_policy_options(prove)
    add_server_options(prove)
    prove.set_defaults(log_handler=cmd_log_prove)

    audit_ = log_commands.add_parser(
        "audit",
        help="auditors: download every entry, check each event and recompute the signed root",
        description="Fetches the latest checkpoint, then every entry bundle not audited before (--state "
        "remembers how far), checks that each entry is the canonical encoding of the event with the right "
        "sequence number, and recomputes the tree's root, which must be the checkpoint's.",
    )
    _add_policy_options(audit_)
    _add_state_option(audit_)
    audit_.add_argument("--no-progress", action="store_true", help="no progress bar")
    audit_.add_argument("--events", type=Path, help="also write every audited event here, as JSON Lines")
    audit_.add_argument(
        "--read-ahead",
        type=int,
        default=2,
        metavar="N",
        help="download up to N pages of entries ahead while checking one (default 2; 0: one at a time)",
    )
    audit_.add_argument(
        "--tiles",
        action="store_true",
        help="read the log as tlog-tiles entry bundles, 256 entries a request, as any tiles client would "
        "(default: GET /api/v1/log/entries, 16,384 a request, compressed)",
    )
    add_server_options(audit_)
    audit_.set_defaults(log_handler=cmd_log_audit)

    report = commands.add_parser("report", help="verify auditors' reports")
    report_commands = report.add_subparsers(dest="report_command", required=True, metavar="COMMAND")
    report_verify = report_commands.add_parser(
        "verify",
        help="verify a report's signature and the checkpoint it names (and, with a server, that the log extends it)",
    )
    report_verify.add_argument("report", type=Path, help="the report as saved from GET /api/v1/reports/... (JSON)")
    _add_policy_options(report_verify)
    _add_state_option(report_verify)
    report_verify.add_argument(
        "--online", action="store_true", help="also check that today's log extends the report's checkpoint"
    )
    add_server_options(report_verify)
    report_verify.set_defaults(log_handler=cmd_report_verify)


def _add_policy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-key",
        default=os.environ.get(ENV_LOG_KEY),
        help=f"the log's verifier key, log_vkey of GET /api/v1/server-key obtained from a source you trust "
        f"(default ${ENV_LOG_KEY}); or the raw base64 key with --origin",
    )
    parser.add_argument("--origin", help="the log's origin, when --log-key is a raw base64 key")
    parser.add_argument("--witness", action="append", default=[], help="a trusted witness's verifier key (repeatable)")
    parser.add_argument("--quorum", type=int, help="how many trusted witnesses must have cosigned (default: all given)")


def _add_state_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state",
        type=Path,
        help="a file remembering the last verified checkpoint (and audit position); checkpoints must extend it",
    )


class _Usage(Exception):
    pass


def _policy(args: argparse.Namespace) -> Policy:
    if not args.log_key:
        raise _Usage(
            f"no log key: give --log-key or set {ENV_LOG_KEY} (log_vkey of GET /api/v1/server-key, from a source "
            "you trust)"
        )
    try:
        log = parse_log_key(args.log_key, args.origin)
        witnesses = [parse_witness_key(text) for text in args.witness]
    except ValueError as exc:
        raise _Usage(str(exc)) from None
    quorum = len(witnesses) if args.quorum is None else args.quorum
    if not 0 <= quorum <= len(witnesses):
        raise _Usage(f"--quorum must be between 0 and the number of --witness keys ({len(witnesses)})")
    return Policy(log, witnesses, quorum)


def _client(args: argparse.Namespace) -> Client:
    from .cli import ENV_API_KEY, ENV_SERVER

    server = args.server or os.environ.get(ENV_SERVER)
    api_key = args.api_key or os.environ.get(ENV_API_KEY)
    if not server or not api_key:
        raise _Usage(f"give --server and --api-key (or set {ENV_SERVER} and {ENV_API_KEY})")
    return Client(server, api_key)


class _per_thread:  # noqa: N801 (used like a function)
    """The API calls of `--read-ahead` threads, each thread with its own client (and session)."""

    def __init__(self, args: argparse.Namespace, first: Client) -> None:
        self.args, self.local = args, threading.local()
        self.local.client = first

    def log_tile(self, path: str) -> bytes:
        if not hasattr(self.local, "client"):
            self.local.client = _client(self.args)
        return self.local.client.log_tile(path)

    def log_entries(self, start: int, end: int) -> bytes:
        if not hasattr(self.local, "client"):
            self.local.client = _client(self.args)
        return self.local.client.log_entries(start, end)


def run(handler: Any, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run a log command, turning its outcome into the exit codes of the module docstring."""
    try:
        return int(handler(args))
    except _Usage as exc:
        parser.error(str(exc))  # exits with EXIT_USAGE
    except LogVerificationError as exc:
        print(f"hashexchange: VERIFICATION FAILED: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ApiError as exc:
        print(f"hashexchange: could not check: {exc}", file=sys.stderr)
        return EXIT_UNCHECKED
    except (OSError, ValueError) as exc:
        print(f"hashexchange: could not check: {exc}", file=sys.stderr)
        return EXIT_UNCHECKED
    return EXIT_UNCHECKED  # unreachable: parser.error exits


def _describe(checkpoint: Checkpoint, witnesses: list[Verifier]) -> str:
    cosigned = f", cosigned by {', '.join(w.name for w in witnesses)}" if witnesses else ""
    return f"{checkpoint.origin}: {checkpoint.size} events, root {checkpoint.root_hash.hex()}{cosigned}"


def _check_against_state(
    args: argparse.Namespace, client: Client, checkpoint: Checkpoint, note_text: str
) -> State | None:
    """With --state: the new checkpoint must extend the stored one; then store it."""
    if not args.state:
        return None
    state = load_state(args.state, checkpoint.origin)
    if state.size and checkpoint.size == state.size:
        if checkpoint.root_hash != state.root_hash:
            raise LogVerificationError(
                f"two different roots for the same size {state.size}: the server shows different logs (a fork)"
            )
    elif state.size:
        if checkpoint.size < state.size:
            check_extends(state, checkpoint, [])  # raises: the log shrank
        answer = client.log_consistency_proof(state.size, checkpoint.size)
        check_extends(state, checkpoint, [b64decode(item) for item in answer.get("proof", [])])
    state.size, state.root_hash, state.checkpoint = checkpoint.size, checkpoint.root_hash, note_text
    return state


def cmd_log_verify(args: argparse.Namespace) -> int:
    policy = _policy(args)
    if args.proof:
        checkpoint, event, witnesses = verify_tlog_proof(args.proof.read_text("utf-8"), policy)
        print(f"verified: event {event['seq']} ({event['kind']}) is in the log of {_describe(checkpoint, witnesses)}")
        print(json.dumps(event, ensure_ascii=False, sort_keys=True))
        return EXIT_OK
    if args.checkpoint:
        checkpoint, witnesses = policy.open(args.checkpoint.read_bytes())
        print(f"verified checkpoint: {_describe(checkpoint, witnesses)}")
        return EXIT_OK
    client = _client(args)
    text = client.log_checkpoint()
    checkpoint, witnesses = policy.open(text)
    state = _check_against_state(args, client, checkpoint, text)
    print(f"verified checkpoint: {_describe(checkpoint, witnesses)}")
    if state is not None:
        save_state(args.state, state)
    return EXIT_OK


def cmd_log_prove(args: argparse.Namespace) -> int:
    policy = _policy(args)
    index = args.leaf_index if args.leaf_index is not None else args.seq - 1
    if index < 0:
        raise _Usage("--seq starts at 1, --leaf-index at 0")
    text = _client(args).log_inclusion_proof(index, args.tree_size)
    checkpoint, event, witnesses = verify_tlog_proof(text, policy)
    if args.out:
        args.out.write_text(text, "utf-8")
    else:
        sys.stdout.write(text)
    print(
        f"verified: event {event['seq']} ({event['kind']}) is in the log of {_describe(checkpoint, witnesses)}",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_log_audit(args: argparse.Namespace) -> int:
    policy = _policy(args)
    client = _client(args)
    text = client.log_checkpoint()
    checkpoint, witnesses = policy.open(text)
    state = load_state(args.state, checkpoint.origin) if args.state else State(checkpoint.origin)
    if state.size > checkpoint.size:
        check_extends(state, checkpoint, [])  # raises: the log shrank
    audited = state.audited.size if state.audited else 0
    events_file = args.events.open("a", encoding="utf-8") if args.events else None
    bar = tqdm(
        total=checkpoint.size - audited,
        unit="event",
        unit_scale=True,
        disable=args.no_progress,
        file=sys.stderr,
        desc="auditing",
    )
    calls = _per_thread(args, client) if args.read_ahead > 0 else client
    read_entries = None if args.tiles else calls.log_entries
    if read_entries is not None and audited < checkpoint.size:
        try:  # a server from before GET /api/v1/log/entries: the tiles, which every server has
            client.log_entries(audited, audited + 1)
        except ApiError as exc:
            if exc.status != 404:
                raise
            read_entries = None
    try:
        result = audit(
            calls.log_tile,
            checkpoint,
            state,
            read_entries=read_entries,
            progress=bar.update,
            on_event=(lambda event: events_file.write(json.dumps(event, ensure_ascii=False) + "\n"))
            if events_file
            else (lambda event: None),
            read_ahead=max(0, args.read_ahead),
        )
    finally:
        bar.close()
        if events_file:
            events_file.close()
    state.size, state.root_hash, state.checkpoint = checkpoint.size, checkpoint.root_hash, text
    if args.state:
        save_state(args.state, state)
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(result.kinds.items())) or "none new"
    if result.audited_from == checkpoint.size:
        print(f"no new events: all {checkpoint.size} were audited before")
    else:
        print(f"audited events {result.audited_from + 1}..{checkpoint.size}: {kinds}")
    print(f"verified: every entry hashes to the signed root of {_describe(checkpoint, witnesses)}")
    return EXIT_OK


def cmd_report_verify(args: argparse.Namespace) -> int:
    policy = _policy(args)
    try:
        report = json.loads(args.report.read_text("utf-8"))
    except ValueError as exc:
        raise LogVerificationError(f"report: {args.report} is not JSON ({exc})") from None
    if not isinstance(report, dict):
        raise LogVerificationError("report: not a JSON object")
    checkpoint, witnesses = verify_report(report, policy)
    print(f"verified report: signed by the log key, computed at {_describe(checkpoint, witnesses)}")
    if args.online or args.state:
        client = _client(args)
        text = client.log_checkpoint()
        latest, _ = policy.open(text)
        state = State(checkpoint.origin, checkpoint.size, checkpoint.root_hash)
        answer = client.log_consistency_proof(checkpoint.size, latest.size)
        check_extends(state, latest, [b64decode(item) for item in answer.get("proof", [])])
        print(f"verified: today's log ({latest.size} events) extends the report's checkpoint")
        if args.state:
            stored = _check_against_state(args, client, latest, text)
            if stored is not None:
                save_state(args.state, stored)
    return EXIT_OK
