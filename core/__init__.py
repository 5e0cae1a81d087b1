"""The floor under the apps: the ledger, the one error shape, Redis, admin and SQL helpers.

Nothing here imports `members`, `hashes`, `exchange` or `config` (an import-linter
contract in pyproject.toml enforces it); every app may import from here.
"""
