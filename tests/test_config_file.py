"""The config file: a syntax error names the file and the line, a missing MOA_CONFIG file is an
error, a missing default ./moa.toml is not (all exit 2 through the CLI, no traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import moa
from moa.cli.main import app
from moa.errors import ConfigError, ErrorCode

runner = CliRunner()


def _no_traceback(result: object) -> None:
    exception = getattr(result, "exception", None)
    assert exception is None or isinstance(exception, SystemExit), repr(exception)
    assert "Traceback" not in getattr(result, "output", "")


def test_a_toml_syntax_error_names_the_file_and_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "moa.toml"
    config.write_text('slm = "embedded:"\nllm = openai:gpt-4o-mini\n')
    monkeypatch.setenv("MOA_CONFIG", str(config))
    with pytest.raises(ConfigError) as info:
        moa.load_settings()
    assert info.value.code == ErrorCode.BAD_CONFIG and info.value.details["line"] == 2 and info.value.details["file"] == str(config)
    result = runner.invoke(app, ["run", "classify"])
    assert result.exit_code == 2
    assert "bad_config" in result.stderr and "moa.toml" in result.stderr and "line 2" in result.stderr
    _no_traceback(result)


def test_a_bad_default_moa_toml_is_reported_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOA_CONFIG")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "moa.toml").write_bytes(b"timeout = 3\n[prices\n")
    result = runner.invoke(app, ["agents"])
    assert result.exit_code == 2 and "bad_config" in result.stderr and "line 2" in result.stderr
    _no_traceback(result)


@pytest.mark.parametrize("content", [b"\xff\xfe\x00slm", b'slm = "embedded:"\x00\n'], ids=["not-utf8", "nul"])
def test_a_config_file_that_is_not_text_is_bad_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: bytes) -> None:
    config = tmp_path / "moa.toml"
    config.write_bytes(content)
    monkeypatch.setenv("MOA_CONFIG", str(config))
    result = runner.invoke(app, ["run", "classify"])
    assert result.exit_code == 2 and "bad_config" in result.stderr and "moa.toml" in result.stderr
    _no_traceback(result)


def test_moa_config_naming_a_missing_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere" / "moa.toml"
    monkeypatch.setenv("MOA_CONFIG", str(missing))
    with pytest.raises(ConfigError) as info:
        moa.load_settings()
    assert info.value.code == ErrorCode.BAD_CONFIG and "does not exist" in info.value.message and "unset MOA_CONFIG" in info.value.message
    result = runner.invoke(app, ["run", "classify"])
    assert result.exit_code == 2 and "bad_config" in result.stderr and "nowhere" in result.stderr
    _no_traceback(result)


def test_a_missing_default_moa_toml_is_fine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MOA_CONFIG")
    monkeypatch.chdir(tmp_path)
    assert moa.load_settings().slm == "embedded:"


def test_an_unknown_key_names_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "team.toml"
    config.write_text("sml = 'typo'\n")
    monkeypatch.setenv("MOA_CONFIG", str(config))
    with pytest.raises(ConfigError) as info:
        moa.load_settings()
    assert "sml" in info.value.message and "team.toml" in info.value.message
