"""Pure knowledge that checks, operations and clients share: readings of Kubernetes objects, host names,
versions, pod states, Cloudflare's facts.

Nothing here does I/O or knows the App: every function takes plain values and returns plain values, so the
same rule is applied the same way wherever it is needed (import-linter keeps this package at the bottom).
"""
