"""Member-side client for the hash exchange.

Everything here runs on the member's own machine: files are hashed locally and only
hashes, signed as DSSE envelopes, are sent to the server. The package has no Django
dependency so that platforms, intake services and peers can install it on its own.
"""

from __future__ import annotations

__version__ = "0.1.0"
