"""`moa serve`'s OpenAPI schema checked by schemathesis against the running server (uvicorn on
127.0.0.1, fake model, an API key): generated requests to every route, no 5xx, and every response
conforms to the schema (status codes, content types, bodies). Bounded: a few examples per route."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from benchmarks.server_load import fake, serving  # noqa: E402
from moa.server import ServerConfig, create_app  # noqa: E402
from moa.server.keys import ApiKey, Keyring, hash_key  # noqa: E402
from moa.settings import load_settings  # noqa: E402

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance, response_schema_conformance]
"""No 5xx, and every response as the schema declares it. Not schemathesis' data-acceptance checks:
the schema says what a request looks like, not every rule a value must meet (an approval rule's
syntax, the server's task length and item limits, known graphs), which are 4xx with a message."""
KEY = "moa-schema-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state = tmp_path_factory.mktemp("schema-state")
    model = fake()
    app = create_app(
        load_settings(state_dir=state, memory_dir=state / "memory"), config=ServerConfig(), keys=Keyring([ApiKey(name="schema", sha256=hash_key(KEY))]),
        slm=model, llm=model,
    )  # fmt: skip
    with serving(app) as url:
        yield url


def test_every_route_answers_within_its_schema(base_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", headers=AUTH)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {"POST /v1/runs", "GET /v1/runs/{run_id}", "POST /v1/chat/completions", "GET /v1/models"}
    checked = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)
        def answers(case: Any) -> None:
            case.call_and_validate(base_url=base_url, headers=AUTH, timeout=60, checks=CHECKS)

        answers()
        checked.append(operation.path)
    assert len(checked) == len(operations)
