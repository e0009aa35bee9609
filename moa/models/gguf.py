"""Read a GGUF file's key/value metadata (header only) to learn what a model can do."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

# GGUF value types: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
_SCALARS: dict[int, str] = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


def _read(f: BinaryIO, fmt: str) -> tuple[Any, ...]:
    size = struct.calcsize("<" + fmt)
    return struct.unpack("<" + fmt, f.read(size))


def _read_str(f: BinaryIO) -> str:
    (n,) = _read(f, "Q")
    return f.read(int(n)).decode("utf-8", errors="replace")


def _skip_or_read(f: BinaryIO, vtype: int, keep: bool) -> object:
    if vtype == _STRING:
        return _read_str(f)
    if vtype == _ARRAY:
        (itype, count) = _read(f, "IQ")
        if itype in _SCALARS and not keep:  # fixed-size items: skip in one seek
            f.seek(struct.calcsize("<" + _SCALARS[int(itype)]) * int(count), 1)
            return None
        items = [_skip_or_read(f, int(itype), keep) for _ in range(int(count))]
        return items if keep else None
    return _read(f, _SCALARS[vtype])[0]


def read_metadata(path: Path, keys: frozenset[str] | None = None) -> dict[str, object]:
    """Return the GGUF metadata (only ``keys`` if given; large arrays are skipped otherwise)."""
    out: dict[str, object] = {}
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        (_version, _n_tensors, n_kv) = _read(f, "IQQ")
        for _ in range(int(n_kv)):
            key = _read_str(f)
            (vtype,) = _read(f, "I")
            wanted = keys is None or key in keys
            value = _skip_or_read(f, int(vtype), keep=wanted and vtype != _ARRAY)
            if wanted:
                out[key] = value
    return out


def has_chat_template(path: Path) -> bool:
    """True when the model ships a chat template (instruction-tuned); False for base models."""
    meta = read_metadata(path, frozenset({"tokenizer.chat_template"}))
    return bool(meta.get("tokenizer.chat_template"))
