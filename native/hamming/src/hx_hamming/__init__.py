"""Where the compiled Hamming kernel lives; hashes/index/ loads it with ctypes."""

from __future__ import annotations

from pathlib import Path

# Bumped whenever the C functions' signatures change; hashes/index checks it, so a stale
# build is reported plainly instead of crashing.
ABI_VERSION = 2


def library_path() -> Path:
    """The shared library built from kernel.c by setup.py."""
    found = sorted(Path(__file__).parent.glob("_kernel*.so"))
    if not found:
        raise FileNotFoundError("hx_hamming was installed without its compiled kernel; reinstall ./native/hamming")
    return found[0]
