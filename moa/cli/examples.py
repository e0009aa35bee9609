"""``moa examples list`` and ``moa examples rm``: what the example store holds, and removing it
(:class:`moa.learning.store.ExampleStore`)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Optional, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from moa.agent.context import RunContext
from moa.cli.output import fail, out
from moa.errors import ErrorCode, MoaError, UserError
from moa.learning.store import Example, ExampleStore
from moa.settings import load_settings

T = TypeVar("T")

examples_app = typer.Typer(
    help="Examples stored from escalated items (answers of higher steps): they train specialists and "
    "become few-shot demonstrations. Turn storing off with --no-store-examples or store_examples = false.",
    no_args_is_help=True,
)


def _with_store(work: Callable[[ExampleStore], Awaitable[T]]) -> T:
    ctx = RunContext.create(load_settings())

    async def go() -> T:
        try:
            return await work(ctx.examples())
        finally:
            await ctx.aclose()

    return asyncio.run(go())


def _rows(examples: list[Example]) -> str:
    return json.dumps([e.model_dump(exclude={"score"}) for e in examples])


def _describe(example: Example) -> str:
    return example.key.partition("=")[2] or example.key or "-"


@examples_app.command("list")
def examples_list(
    agent: Annotated[Optional[str], typer.Argument(help="Only this agent's examples.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every stored example with its provenance: id, agent, task, label, model, run, time, text."""
    try:
        examples = _with_store(lambda store: store.stored(agent))
    except MoaError as exc:
        fail(exc, as_json)
    if as_json:
        out.print_json(_rows(examples))
        return
    table = Table(title=f"Stored examples ({len(examples)})", title_justify="left")
    table.add_column("id", no_wrap=True)
    for col in ("agent", "task", "label", "model", "run", "stored", "text"):
        table.add_column(col, overflow="fold")
    for e in examples:
        stored = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.time)) if e.time else "-"
        table.add_row(e.id, e.agent, escape(_describe(e)), escape(e.label), escape(e.model), e.run_id or "-", stored, escape(e.text[:120]))
    out.print(table)
    if not examples:
        out.print("nothing is stored; escalated items answered confidently by a higher step are stored unless store_examples = false", highlight=False)


@examples_app.command("rm")
def examples_rm(
    ids: Annotated[Optional[list[str]], typer.Argument(help="Ids of examples to remove (`moa examples list` shows them).")] = None,
    run: Annotated[Optional[str], typer.Option("--run", help="Remove every example this run stored.")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Remove every stored example (of --agent only, if given).")] = False,
    agent: Annotated[Optional[str], typer.Option("--agent", help="Only this agent's examples.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Remove stored examples: by id, by the run that stored them, or all of them."""
    try:
        if not ids and run is None and not everything:
            raise UserError(ErrorCode.INVALID_INPUT, "say which examples to remove: IDs, --run RUN_ID or --all (`moa examples list` shows them)")

        async def remove(store: ExampleStore) -> list[Example]:
            if ids:
                known = {e.id for e in await store.stored(agent)}
                unknown = [i for i in ids if i not in known]
                if unknown:
                    raise UserError(
                        ErrorCode.INVALID_INPUT,
                        f"no stored example has the id {', '.join(unknown)}; nothing was removed; `moa examples list` shows the ids",
                    )
            return await store.remove(ids=ids or (), run_id=run, everything=everything, agent=agent)

        removed = _with_store(remove)
    except MoaError as exc:
        fail(exc, as_json)
    if as_json:
        out.print_json(json.dumps({"removed": len(removed), "examples": json.loads(_rows(removed))}))
        return
    out.print(f"removed {len(removed)} example{'s' * (len(removed) != 1)}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``moa examples`` to ``app``."""
    app.add_typer(examples_app, name="examples")
