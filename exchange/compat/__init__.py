"""Compatibility facades: our data in the shapes of APIs that existing clients already speak.

Platforms run Meta's `threatexchange` library, its CLI and Hasher-Matcher-Actioner
today; of the exchanges those know, only the StopNCII client can be pointed at another
server by configuration alone. `stopncii` (pure mapping), `selectors` (FetchHashes),
`services` (feedback and unsigned hashes), `auth` and `views` serve that shape under
/compat/stopncii/v1/. `ncmec` (pure shape: XML in and out), `ncmec_selectors`
(entries by time range), `ncmec_services` (votes as outcomes) and `ncmec_views` serve
NCMEC's hash-sharing API v2 shape under /compat/ncmec/v2/. See docs/platforms.md.
"""
