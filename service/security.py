"""API keys: generation, hashing and constant-time verification.

A key looks like `rmx_<43 url-safe chars>` (256 bits from `secrets`). Only its sha256 hex digest
is stored, with a short public prefix so a key can be recognised in listings without revealing it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "rmx_"
PUBLIC_PREFIX_LEN = 12  # "rmx_" + 8 random characters


def generate_api_key() -> str:
    """A new random API key; shown to its owner once and never stored in clear."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """sha256 hex digest of the key (fast hashing is fine: keys carry 256 bits of entropy)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def public_prefix(key: str) -> str:
    return key[:PUBLIC_PREFIX_LEN]


def key_matches(key: str, stored_hash: str) -> bool:
    """Constant-time comparison of a presented key with a stored digest."""
    return hmac.compare_digest(hash_api_key(key), stored_hash)


def looks_like_api_key(key: str) -> bool:
    return key.startswith(KEY_PREFIX) and 16 <= len(key) <= 256
