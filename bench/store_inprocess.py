"""CPU per verified submission stored in-process (`submissions_create`), batches of 1,000, SQLite.

No HTTP, no other process: the cost of checking and storing signed envelopes, to compare
two checkouts of the project on the same machine in one sitting. It runs against the
checkout it is started from (PYTHONPATH) and a database named by DATABASE_URL:

    DATABASE_URL=sqlite:////tmp/a.sqlite3 PYTHONPATH=. .venv/bin/python bench/store_inprocess.py --batches 5

and prints `N submissions, X us CPU each`. Run it alternately against two checkouts
(e.g. before and after a change, `git archive REV | tar -x -C DIR`) and compare medians.
"""

from __future__ import annotations

import argparse
import base64
import os
import tempfile
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("ENV_FILE", os.devnull)
# A database of its own unless told otherwise: never the development one.
os.environ.setdefault("DATABASE_URL", f"sqlite:///{tempfile.mkdtemp(prefix='hx-store-bench-')}/bench.sqlite3")

import django  # noqa: E402
from harness import print_machine  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from hashexchange_client import dsse, keys, payloads  # noqa: E402

try:
    from core.ledger import Actor  # noqa: E402
except ImportError:  # a checkout from before core/
    from exchange.ledger import Actor  # type: ignore[no-redef]  # noqa: E402
from hashes import services as hash_services  # noqa: E402
from members import services  # noqa: E402
from members.models import Program  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=5, help="batches of 1,000 (default 5)")
    parser.add_argument("--quick", action="store_true", help="one batch")
    args = parser.parse_args()
    if args.quick:
        args.batches = 1
    print_machine()
    call_command("migrate", verbosity=0)
    actor = Actor.operator("bench")
    program = Program.objects.filter(slug="bench").first() or services.program_create(
        slug="bench", name="Bench", actor=actor
    )
    member = services.member_create(slug=f"bench-{os.getpid()}", kind="platform", status="active", actor=actor)
    services.enrollment_set(member=member, program=program, state="opted_in", actor=actor)
    private = keys.generate_private_key()
    public = base64.b64encode(keys.public_key_bytes(private)).decode()
    services.signing_key_register(member=member, public_key=public, actor=actor)
    batches = [
        [
            dsse.sign_envelope(
                payloads.SUBMISSION_TYPE,
                payloads.submission_payload(program="bench", signal_type="sha256", value=os.urandom(32).hex()),
                private,
            )
            for _ in range(1000)
        ]
        for _ in range(args.batches)
    ]
    started = time.process_time()
    for batch in batches:
        results = hash_services.submissions_create(member=member, items=batch)
        if any(r.status != "accepted" for r in results):
            raise SystemExit("a submission was not accepted")
    cpu = time.process_time() - started
    total = args.batches * 1000
    print(f"{total} submissions, {cpu / total * 1e6:.1f} us CPU each")


if __name__ == "__main__":
    main()
