"""RFC 6962, section 2.1, written from the RFC's text for the tests: the reference that
the project's Merkle code (hashexchange_client.merkle) is checked against.

MTH, PATH and PROOF are the RFC's recursive definitions over a list of leaf data. The
RFC defines proofs, not their verification; the verifiers here retrace the same
recursion, consuming proof elements from the end (the last element belongs to the top
split) and rebuilding the roots bottom-up. Nothing here is shared with the code under
test beyond SHA-256.
"""

from __future__ import annotations

import hashlib


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class Rfc6962:
    """RFC 6962, section 2.1, over a list of leaf *data* (not hashes), as the text puts it.

    `*_from_*` and `*_holds` take leaf hashes, as a verifier holds them.
    """

    @staticmethod
    def k(n: int) -> int:
        """The largest power of two smaller than n."""
        k = 1
        while k * 2 < n:
            k *= 2
        return k

    @classmethod
    def mth(cls, d: list[bytes]) -> bytes:
        n = len(d)
        if n == 0:
            return sha256(b"")
        if n == 1:
            return sha256(b"\x00" + d[0])
        k = cls.k(n)
        return sha256(b"\x01" + cls.mth(d[:k]) + cls.mth(d[k:]))

    @classmethod
    def path(cls, m: int, d: list[bytes]) -> list[bytes]:
        n = len(d)
        if n == 1:
            return []
        k = cls.k(n)
        if m < k:
            return cls.path(m, d[:k]) + [cls.mth(d[k:])]
        return cls.path(m - k, d[k:]) + [cls.mth(d[:k])]

    @classmethod
    def proof(cls, m: int, d: list[bytes]) -> list[bytes]:
        return cls.subproof(m, d, True)

    @classmethod
    def subproof(cls, m: int, d: list[bytes], b: bool) -> list[bytes]:
        n = len(d)
        if m == n:
            return [] if b else [cls.mth(d)]
        k = cls.k(n)
        if m <= k:
            return cls.subproof(m, d[:k], b) + [cls.mth(d[k:])]
        return cls.subproof(m - k, d[k:], False) + [cls.mth(d[:k])]

    # The verifiers retrace PATH and SUBPROOF: each proof element is consumed from the end
    # (the last element belongs to the top split), and the roots are rebuilt bottom-up.

    @classmethod
    def root_from_path(cls, leaf_hash: bytes, m: int, n: int, path: list[bytes]) -> bytes:
        if n == 1:
            if path:
                raise ValueError("path too long")
            return leaf_hash
        if not path:
            raise ValueError("path too short")
        k = cls.k(n)
        *rest, last = path
        if m < k:
            return sha256(b"\x01" + cls.root_from_path(leaf_hash, m, k, rest) + last)
        return sha256(b"\x01" + last + cls.root_from_path(leaf_hash, m - k, n - k, rest))

    @classmethod
    def roots_from_proof(
        cls, m: int, n: int, proof: list[bytes], old_root: bytes, b: bool = True
    ) -> tuple[bytes, bytes]:
        """(the root of the first m leaves, the root of all n) that SUBPROOF(m, D[n], b) implies."""
        if m == n:
            if b:
                if proof:
                    raise ValueError("proof too long")
                return old_root, old_root
            if len(proof) != 1:
                raise ValueError("proof of the wrong length")
            return proof[0], proof[0]
        if not proof:
            raise ValueError("proof too short")
        k = cls.k(n)
        *rest, last = proof
        if m <= k:
            old, new = cls.roots_from_proof(m, k, rest, old_root, b)
            return old, sha256(b"\x01" + new + last)
        old, new = cls.roots_from_proof(m - k, n - k, rest, old_root, False)
        return sha256(b"\x01" + last + old), sha256(b"\x01" + last + new)

    @classmethod
    def inclusion_holds(cls, leaf_hash: bytes, m: int, n: int, path: list[bytes], root: bytes) -> bool:
        try:
            return cls.root_from_path(leaf_hash, m, n, path) == root
        except ValueError:
            return False

    @classmethod
    def consistency_holds(cls, m: int, n: int, proof: list[bytes], old_root: bytes, new_root: bytes) -> bool:
        if m == 0:
            return not proof
        try:
            old, new = cls.roots_from_proof(m, n, proof, old_root)
        except ValueError:
            return False
        return old == old_root and new == new_root
