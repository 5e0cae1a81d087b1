"""Install the pinned requirements into the virtualenv, saying what is missing and how far it got.

    python -m dev.install          # what `make venv` (so `make run` and `make test`) runs

Two things made the first `make run` hard to follow. pdqhash has no Linux wheel and our
matching kernel (native/hamming) is C, so pip compiles both: without a C and C++ compiler
and the Python headers it failed minutes in, deep inside a compiler error. And pip is
silent for minutes while it builds. So this checks for the build tools first and names
the packages to install, then runs pip, numbering the requirements as pip collects them
and printing a line when pip has said nothing for a while.

Only the standard library: it runs before anything is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
QUIET_SECONDS = 15.0


@dataclass(frozen=True)
class Missing:
    """A build tool that is not there, and the Debian package that provides it."""

    what: str
    package: str


def missing_build_tools(
    *, which: Callable[[str], str | None] = shutil.which, include_dir: str | None = None
) -> list[Missing]:
    """The compilers and headers pip needs to build pdqhash and native/hamming that are absent."""
    missing = []
    if not (which("cc") or which("gcc")):
        missing.append(Missing("a C compiler (cc or gcc)", "gcc"))
    if not (which("c++") or which("g++")):
        missing.append(Missing("a C++ compiler (c++ or g++), for pdqhash", "g++"))
    include = include_dir if include_dir is not None else sysconfig.get_paths()["include"]
    if not (Path(include) / "Python.h").is_file():
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        missing.append(Missing(f"the Python {version} headers ({Path(include) / 'Python.h'})", "python3-dev"))
    return missing


def explain(missing: Sequence[Missing]) -> str:
    """What to install, as a person at the terminal needs it."""
    lines = ["Installing the requirements compiles pdqhash (C++) and native/hamming (C); missing:"]
    lines += [f"  - {item.what}" for item in missing]
    packages = " ".join(dict.fromkeys(item.package for item in missing))
    lines += [
        f"On Debian or Ubuntu: sudo apt-get install {packages}",
        "(Fedora: gcc gcc-c++ python3-devel; macOS: xcode-select --install.) Then run the command again.",
    ]
    return "\n".join(lines)


def requirement_count(path: Path) -> int:
    """Lines of requirements.txt that name something to install."""
    return sum(1 for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#"))


def run_with_progress(
    command: Sequence[str],
    *,
    total: int = 0,
    quiet_seconds: float = QUIET_SECONDS,
    out: IO[str] | None = None,
) -> int:
    """Run `command`, echoing its output; number pip's "Collecting" lines out of `total`, and
    say so every `quiet_seconds` that the command prints nothing (compiling, mostly)."""
    stream = out or sys.stdout
    started = time.monotonic()
    state = {"last": started, "line": "", "collected": 0}
    lock = threading.Lock()
    done = threading.Event()

    def emit(text: str) -> None:
        with lock:
            stream.write(text + "\n")
            stream.flush()

    def ticker() -> None:
        while not done.wait(1.0):
            with lock:
                quiet = time.monotonic() - state["last"]
                last = state["line"]
            if quiet >= quiet_seconds:
                elapsed = time.monotonic() - started
                emit(f"    ... still working ({elapsed:.0f}s in; last: {last.strip()[:100] or 'starting'})")
                with lock:
                    state["last"] = time.monotonic()

    proc = subprocess.Popen(
        list(command), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    thread = threading.Thread(target=ticker, daemon=True)
    thread.start()
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip("\n")
        with lock:
            state["last"] = time.monotonic()
            state["line"] = line
            if line.startswith("Collecting ") or line.startswith("Obtaining "):
                state["collected"] += 1
                if total:
                    line = f"[{state['collected']}/{total}] {line}"
        emit(line)
    code = proc.wait()
    done.set()
    thread.join(timeout=2)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    missing = missing_build_tools()
    if missing:
        print(explain(missing), file=sys.stderr)
        return 1
    requirements = ROOT / "requirements.txt"
    total = requirement_count(requirements)
    print(
        f"Installing {total} pinned requirements into {Path(sys.prefix)} "
        "(the first time takes a few minutes: pdqhash and native/hamming are compiled)",
        flush=True,
    )
    started = time.monotonic()
    pip = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off"]
    code = run_with_progress([*pip, "-r", str(requirements)], total=total)  # the client too (-e ./client)
    if code != 0:
        print(f"pip failed (exit {code}); its output above says why.", file=sys.stderr)
        return code
    print(f"Installed in {time.monotonic() - started:.0f}s.", flush=True)
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
