"""Compatibility facades: our data in the shapes of APIs that existing clients already speak.

Platforms run Meta's `threatexchange` library, its CLI and Hasher-Matcher-Actioner
today; of the exchanges those know, only the StopNCII client can be pointed at another
server by configuration alone. `stopncii` (pure mapping), `selectors` (FetchHashes),
`services` (feedback and unsigned hashes), `auth` and `views` serve that shape under
/compat/stopncii/v1/. See docs/platforms.md.
"""
