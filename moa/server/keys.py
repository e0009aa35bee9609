"""API keys of ``moa serve``: a key is shown once when it is made (``moa keys create``); only
its sha256 is stored, in ``state_dir/api_keys.json`` (mode 0600), or given as ``MOA_API_KEYS``
(comma-separated ``sha256`` or ``name:sha256`` entries) where no file can be written.

A request presents ``Authorization: Bearer <key>``; :meth:`Keyring.find` hashes it and compares
it with every stored hash in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from pydantic import BaseModel, ValidationError

from moa.errors import ErrorCode, UserError
from moa.files import atomic_write
from moa.settings import Settings

KEYS_FILE = "api_keys.json"
ENV = "MOA_API_KEYS"
PREFIX = "moa-"
_HEX = re.compile(r"[0-9a-f]{64}")


class ApiKey(BaseModel):
    """A stored key: its name and the sha256 of the key (never the key)."""

    name: str
    sha256: str
    created: float = 0.0


def keys_path(settings: Settings) -> Path:
    return settings.state_dir / KEYS_FILE


def hash_key(key: str) -> str:
    """The sha256 of ``key``, hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _read(path: Path) -> list[ApiKey]:
    if not path.exists():
        return []
    try:
        return [ApiKey.model_validate(k) for k in json.loads(path.read_text(encoding="utf-8"))]
    except (OSError, ValueError, TypeError, ValidationError) as exc:
        raise UserError(ErrorCode.BAD_CONFIG, f"cannot read the API keys file {path} ({exc}); fix it, or move it away and create keys again") from exc


def _from_env(value: str) -> list[ApiKey]:
    keys = []
    for n, entry in enumerate(e.strip() for e in value.split(",") if e.strip()):
        name, _, digest = entry.rpartition(":")
        if not _HEX.fullmatch(digest.lower()):
            raise UserError(
                ErrorCode.BAD_CONFIG,
                f"{ENV} entry {n + 1} is not a sha256 (64 hex digits) or name:sha256; give the hashes `moa keys create` prints, never the keys",
            )
        keys.append(ApiKey(name=name or f"env-{n + 1}", sha256=digest.lower()))
    return keys


class Keyring:
    """The keys a server accepts."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = keys

    @classmethod
    def load(cls, settings: Settings, environ: Mapping[str, str] | None = None) -> Keyring:
        """The keys of ``state_dir/api_keys.json`` and of ``MOA_API_KEYS``."""
        env = (os.environ if environ is None else environ).get(ENV, "")
        return cls([*_read(keys_path(settings)), *_from_env(env)])

    def find(self, presented: str) -> ApiKey | None:
        """The key ``presented`` is, if it is one (every hash is compared: no early exit)."""
        digest = hash_key(presented)
        found = None
        for key in self.keys:
            if hmac.compare_digest(key.sha256, digest):
                found = key
        return found

    def __len__(self) -> int:
        return len(self.keys)


def create_key(settings: Settings, name: str) -> tuple[str, ApiKey]:
    """Make a new key, store its hash under ``name``; return the key (shown once) and its record."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise UserError(ErrorCode.INVALID_INPUT, f"key name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    path = keys_path(settings)
    keys = _read(path)
    if any(k.name == name for k in keys):
        raise UserError(ErrorCode.INVALID_INPUT, f"a key named {name!r} exists in {path}; pick another name or remove it with `moa keys rm {name}`")
    key = PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(name=name, sha256=hash_key(key), created=round(time.time(), 3))
    _write(path, [*keys, record])
    return key, record


def remove_key(settings: Settings, name: str) -> bool:
    """Remove the key named ``name``; whether there was one."""
    path = keys_path(settings)
    keys = _read(path)
    kept = [k for k in keys if k.name != name]
    if len(kept) != len(keys):
        _write(path, kept)
    return len(kept) != len(keys)


def list_keys(settings: Settings) -> list[ApiKey]:
    return _read(keys_path(settings))


def _write(path: Path, keys: list[ApiKey]) -> None:
    data = json.dumps([k.model_dump() for k in keys], indent=1).encode()

    def write(f: BinaryIO) -> None:
        os.chmod(f.name, 0o600)  # readable by its owner only, before the hashes are in it
        f.write(data)

    atomic_write(path, write, "the API keys")
