"""ModelAgent: an agent that prompts a model and validates its structured answer.

It prompts with a *completion* prompt for base models and a *chat* prompt for instruction-tuned
ones (chosen from the backend's capabilities), decodes constrained JSON and validates it
(:mod:`moa.agent.structured`), then computes a confidence (logprobs, agreement of samples, or the
model's own score). Its cascade (:mod:`moa.agent.cascade`) climbs from cheap steps to strong ones.
Every model call goes through the run context's door (:meth:`moa.agent.context.RunContext.call`).
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import time
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar, Generic, Self, TypeVar

import numpy as np
from pydantic import BaseModel

from moa.agent.base import Agent, InputT, OutputT
from moa.agent.calls import current_scope
from moa.agent.cascade import cascade_steps, run_cascade
from moa.agent.confidence import calibrate, choice_probs
from moa.agent.context import RunContext
from moa.agent.results import AgentRun, Attempt
from moa.agent.structured import generate_structured, output_token_limit, schema_of
from moa.agent.tools import Tool, run_tool_loop
from moa.errors import ApprovalDenied, ErrorCode, InvalidOutput, MoaError, UserError
from moa.learning.store import Example, describe_key
from moa.learning.thresholds import ThresholdChoice
from moa.logs import get_logger
from moa.models.base import Capabilities, GenerateRequest, Generation, Message, ModelBackend
from moa.routing.policy import SPECIALIST, Policy, Step, explicit_threshold, routing_text
from moa.settings import Settings
from moa.usage import Usage

log = get_logger(__name__)
DecodeT = TypeVar("DecodeT", bound=BaseModel)


class ModelAgent(Agent[InputT, OutputT], Generic[InputT, OutputT, DecodeT]):
    """An agent that prompts a model and validates its structured answer.

    Subclasses implement :meth:`decode_type`, :meth:`completion_prompt`, :meth:`chat_messages`
    and :meth:`finish`. Put constant text (instructions, shots) first and the item last, so the
    embedded engine reuses the KV cache of the shared prefix across a batch.
    """

    max_tokens: ClassVar[int | None] = None
    """Output-token limit of the agent's answers; ``None`` (the default): derived from the decode
    schema (:func:`~moa.agent.structured.output_token_limit`), so no valid answer is ever cut."""
    logprobs: ClassVar[int] = 10
    threshold: float | None = None
    """Confidence below which an answer escalates (``None``: only invalid output escalates).
    Overridden per run by ``settings.thresholds[name]`` / ``settings.threshold``, and those by
    :meth:`with_policy`."""
    _own_threshold: float | None = None
    sample_temperature: ClassVar[float] = 0.8
    """Temperature of the k samples when confidence is measured by agreement."""

    def __init__(self, *, tools: Sequence[Tool] = ()) -> None:
        self.tools: tuple[Tool, ...] = tuple(tools)
        """Tools this agent may call (its allowlist); used with chat models that support tool calls."""
        self.cascade: tuple[str | ModelBackend, ...] | None = None
        """This agent's own cascade (else the run's ``settings.cascade``)."""

    def with_policy(self, *, threshold: float | None = None, cascade: Sequence[str | ModelBackend] | None = None) -> Self:
        """A copy of this agent with its own escalation threshold and/or cascade, e.g.
        ``sentiment.with_policy(threshold=0.9, cascade=["slm", "openai:gpt-4o-mini"])``.
        Backends (e.g. fakes) may stand in cascade steps directly."""
        if threshold is not None and not 0 <= threshold <= 1:
            raise UserError(ErrorCode.BAD_CONFIG, f"threshold must be between 0 and 1, got {threshold}")
        clone = copy.copy(self)
        if threshold is not None:
            clone._own_threshold = threshold
        if cascade is not None:
            if not cascade:
                raise UserError(ErrorCode.BAD_CONFIG, "an agent's cascade needs at least one step, e.g. ['slm', 'llm']")
            clone.cascade = tuple(cascade)
        return clone

    def own_routing(self) -> str:
        """This copy's own cascade and threshold in words (``""``: it follows the run's), e.g. what a
        plan set for its subtask (:meth:`with_policy`); approvals of its calls show it."""
        steps = None if self.cascade is None else [s if isinstance(s, str) else s.spec for s in self.cascade]
        return routing_text(steps, self._own_threshold)

    def batch_width(self, ctx: RunContext) -> int:
        """Items in flight: what the first model step's backend serves at once (its parallel slots
        or connection limit), within the tier's limit (``slm_concurrency``)."""
        steps = [s for s in self.policy(ctx).steps if s.spec is not None]
        if not steps:
            return ctx.settings.concurrency
        width = ctx.backend_for(steps[0]).max_concurrency
        tier_limit = {"slm": ctx.settings.slm_concurrency, "llm": ctx.settings.llm_concurrency}.get(steps[0].name)
        return min(width, tier_limit) if tier_limit else width

    def policy(self, ctx: RunContext) -> Policy:
        """This agent's escalation policy in ``ctx``'s run."""
        policy = ctx.policy(self.name, self.threshold, getattr(self, "cascade", None))
        return policy if self._own_threshold is None else dataclasses.replace(policy, threshold=self._own_threshold)

    def with_tools(self, *tools: Tool) -> Self:
        """A copy of this agent that may call ``tools`` (e.g. ``agent_tool(other)``, ``memory_search``)."""
        clone = copy.copy(self)
        clone.tools = (*self.tools, *tools)
        return clone

    @abstractmethod
    def decode_type(self, data: InputT, caps: Capabilities) -> type[DecodeT]:
        """The pydantic model the model is constrained to produce."""

    @abstractmethod
    def completion_prompt(self, data: InputT) -> str:
        """A few-shot completion prompt for base models (ends where the JSON answer begins)."""

    @abstractmethod
    def chat_messages(self, data: InputT) -> list[Message]:
        """Chat messages for instruction-tuned models."""

    @abstractmethod
    def finish(self, data: InputT, decoded: DecodeT, gen: Generation, probs: dict[str, float] | None) -> OutputT:
        """Turn the decoded answer into the agent's output.

        ``probs``: for choice agents (:meth:`choices`), the calibrated probability of each choice
        when the backend gives logprobs, else ``None``. The decision is the most probable choice.
        """

    def choices(self, data: InputT) -> Sequence[str] | None:
        """The allowed values of :attr:`choice_field` for a classification agent (else ``None``)."""
        return None

    choice_field: ClassVar[str] = "label"
    calibration_inputs: ClassVar[tuple[str, ...]] = ()
    """Content-free texts whose mean choice probabilities are divided out on base models
    (contextual calibration, :func:`moa.agent.confidence.calibrate`); empty: no calibration."""

    async def _choice_probs(
        self, ctx: RunContext, step: Step, data: InputT, caps: Capabilities, decoded: DecodeT, gen: Generation
    ) -> dict[str, float] | None:
        """Calibrated choice probabilities (the prior's calls count for the item that made them)."""
        choices = self.choices(data)
        if not choices or not caps.logprobs:
            return None
        probs = choice_probs(gen, choices, str(getattr(decoded, self.choice_field)), self.choice_field)
        if probs is None or caps.chat or not self.calibration_inputs:
            return probs
        free = data.model_copy(update={self.text_field: "N/A"})
        key = ("prior", ctx.backend_for(step).spec, self.name, self.completion_prompt(free))
        prior, _ = await ctx.cached(key, lambda: self._prior(ctx, step, data, caps))
        return calibrate(probs, prior) if prior else probs

    async def _prior(self, ctx: RunContext, step: Step, data: InputT, caps: Capabilities) -> dict[str, float] | None:
        """Mean choice probabilities over content-free inputs: the prompt's own bias."""
        choices = self.choices(data) or []
        priors: list[dict[str, float]] = []
        for text in self.calibration_inputs:
            free = data.model_copy(update={self.text_field: text})
            try:
                result = await generate_structured(ctx, step, self.request(free, caps), self.decode_type(free, caps), purpose="calibrate")
            except MoaError:
                continue
            probs = choice_probs(result.generation, choices, str(getattr(result.value, self.choice_field)), self.choice_field)
            if probs:
                priors.append(probs)
        if not priors:
            return None
        return {c: sum(p[c] for p in priors) / len(priors) for c in choices}

    async def _use_tools(self, ctx: RunContext, step: Step, data: InputT, caps: Capabilities) -> list[Message] | None:
        """Run the tool loop first when this agent has tools and the model can call them (the
        calls are recorded in the open scope)."""
        if not self.tools:
            return None
        if not (caps.chat and caps.tools):
            log.info("tools_unavailable", agent=self.name, model=ctx.backend_for(step).spec, reason="the model has no tool-calling API")
            return None
        with ctx.scope() as scope:
            messages = await run_tool_loop(ctx, step, self.chat_messages(data), self.tools)
        if scope.tool_calls:
            messages = [*messages, Message(role="user", content="Now give your final answer as JSON.")]
        return messages

    def request(
        self, data: InputT, caps: Capabilities, messages: list[Message] | None = None, examples: Sequence[Example] = ()
    ) -> GenerateRequest:
        decode = self.decode_type(data, caps)
        schema = schema_of(decode)
        top = self.logprobs if caps.logprobs else 0
        limit = self.max_tokens or output_token_limit(decode)
        if caps.chat:
            messages = messages or self.chat_messages(data)
            return GenerateRequest(messages=messages, json_schema=schema, max_tokens=limit, top_logprobs=top)
        prompt = self.completion_prompt_with(data, examples) if examples else self.completion_prompt(data)
        return GenerateRequest(prompt=prompt, json_schema=schema, max_tokens=limit, top_logprobs=top)

    # --- classification hooks: specialists, example store, calibration ---------------------

    def label_of(self, data: InputT, output: BaseModel) -> str | None:
        """The label an output stands for (classification agents), else ``None``."""
        if self.choices(data) is None:
            return None
        value = getattr(output, self.choice_field, None)
        return None if value is None else str(value)

    def from_label(self, data: InputT, label: str, confidence: float) -> OutputT:
        """The output for ``label`` with ``confidence`` (how a specialist's prediction becomes an output)."""
        raise UserError(ErrorCode.NOT_TRAINED, f"agent {self.name!r} cannot take answers from a specialist (implement from_label)")

    def specialist_key(self, data: InputT) -> str | None:
        """Names the classification task of ``data`` (the label set); specialists and stored
        examples are kept per key. ``None``: not a classification agent."""
        choices = self.choices(data)
        return None if choices is None else f"labels={','.join(sorted(choices))}"

    def options_for_labels(self, labels: Sequence[str]) -> dict[str, Any]:
        """Input options that make this agent choose among ``labels`` (for ``moa train``/``calibrate``)."""
        return {}

    def options_for_key(self, key: str) -> dict[str, Any]:
        """Input options whose task is ``key`` (the reverse of :meth:`specialist_key`):
        ``labels=a,b`` → :meth:`options_for_labels`, ``name=value`` → ``{name: value}``."""
        name, _, value = key.partition("=")
        if name == "labels":
            labels = value.split(",")
            return self.options_for_labels(labels) or {"labels": labels}
        return {name: value} if value else {}

    def shipped_learned(self, settings: Settings) -> str | None:
        """What moa itself ships trained for this agent (and uses unless ``shipped_specialists``
        is off), in words for ``moa agents``; ``None``: nothing."""
        return None

    def how_to_ask(self, key: str) -> str:
        """How a ``moa run`` asks this agent for the task ``key``, in words."""
        options = self.options_for_key(key)
        try:
            default = self.specialist_key(self.make_input("x", {}))
        except MoaError:  # the agent has no default task (a required option)
            default = None
        if default == key:
            return f"every {self.name} run that chooses no other task asks for it"
        flags = " ".join(f"--option {self.name}.{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in options.items())
        wording = self.task_wording(options)
        return f"a run asks for it with {flags}" + (f", or when the task says {wording!r}" if wording else "")

    def chosen_thresholds(self, ctx: RunContext, data: InputT, steps: Sequence[Step]) -> ThresholdChoice | None:
        """The thresholds chosen from data (``moa calibrate --cascade``) for the task of ``data`` and
        the cascade ``steps``, when the run uses them: it sets no threshold of its own (``--threshold``,
        ``threshold`` / ``thresholds`` in the settings, :meth:`with_policy`, a plan's) and the steps
        run on the models they were chosen with."""
        choice = self._stored_thresholds(ctx, data, steps)
        return choice if choice is not None and not self._other_models(ctx, choice, data, steps) else None

    def _stored_thresholds(self, ctx: RunContext, data: InputT, steps: Sequence[Step]) -> ThresholdChoice | None:
        if len(steps) < 2 or self._own_threshold is not None or explicit_threshold(ctx.settings, self.name):
            return None
        key = self.specialist_key(data)
        return None if key is None else ctx.thresholds(self.name, key, [s.name for s in steps])

    def step_models(self, ctx: RunContext, data: InputT, steps: Sequence[Step]) -> dict[str, str]:
        """What answers on each step for the task of ``data``: a model step's model spec, the
        specialist's training time (thresholds chosen from data are tied to both)."""
        models = {s.name: ctx.backend_for(s).spec for s in steps if s.spec is not None}
        if any(s.name == SPECIALIST for s in steps) and (specialist := self.specialist_for(ctx, data)) is not None:
            models[SPECIALIST] = f"trained {specialist.created}"
        return models

    def _other_models(self, ctx: RunContext, choice: ThresholdChoice, data: InputT, steps: Sequence[Step]) -> list[str]:
        """The steps that run on another model (or a retrained specialist) than when ``choice`` was made, in words."""
        now = self.step_models(ctx, data, steps)
        return [f"{name} {choice.models[name]} then, {spec} now" for name, spec in now.items() if name in choice.models and choice.models[name] != spec]

    def calibrate_command(self, key: str, steps: Sequence[str]) -> str:
        """The ``moa calibrate`` command that chooses thresholds for the task ``key`` and cascade ``steps``."""
        try:
            default = self.specialist_key(self.make_input("x", {}))
        except MoaError:
            default = None
        options = {} if default == key else self.options_for_key(key)
        flags = "".join(f" --option {k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in options.items())
        return f"moa calibrate {self.name} DATA --cascade {','.join(steps)}{flags}"

    def threshold_warning(self, ctx: RunContext, data: InputT) -> str | None:
        """What the run's record says when the cascade of ``data`` escalates on a threshold not chosen
        from the user's data (none stored for the task and cascade, or chosen on other models);
        ``None`` when it is, when the run sets a threshold, or when there is nothing to choose (one
        step, or an agent that escalates only failed answers, e.g. extraction's entity tagger)."""
        key = self.specialist_key(data)
        policy = self.policy(ctx)
        steps = cascade_steps(self, ctx, data)
        if key is None or len(steps) < 2 or policy.threshold is None or self._own_threshold is not None or explicit_threshold(ctx.settings, self.name):
            return None
        names = [s.name for s in steps]
        using = f"{policy.threshold:g}"
        task = f"{self.name} ({describe_key(key)})"
        command = self.calibrate_command(key, names)
        choice = self._stored_thresholds(ctx, data, steps)
        if choice is not None:
            changed = self._other_models(ctx, choice, data, steps)
            if not changed:
                return None
            return (
                f"{task}: the thresholds chosen from your data for the cascade {' → '.join(names)} are not used, its steps changed "
                f"({'; '.join(changed)}); using {using}; run `{command}` to choose them again"
            )
        others = [i for i in ctx.learned(self.name) if i.kind == "thresholds" and i.key == key]
        elsewhere = f" (thresholds are stored for another cascade: {'; '.join(i.detail for i in others)})" if others else ""
        return f"{task}: no calibrated threshold for the cascade {' → '.join(names)}{elsewhere}, using {using}; run `{command}` to choose one from your data"

    def learned_warnings(self, ctx: RunContext, data: InputT) -> list[str]:
        """What was trained or calibrated for this agent but does not fit the task of ``data``
        (another label set), in words for the run's record: it is not used. And whether the
        cascade escalates on a threshold chosen from data (:meth:`threshold_warning`)."""
        threshold = self.threshold_warning(ctx, data)
        warnings = [threshold] if threshold else []
        key = self.specialist_key(data)
        learned = ctx.learned(self.name) if key is not None else []
        if key is None or not learned:
            return warnings
        wanted = describe_key(key)
        steps = self.policy(ctx).steps
        specialists = [i for i in learned if i.kind == "specialist"]
        if self.tier != "llm" and any(s.name == SPECIALIST for s in steps) and not any(self.serves_key(i.key, data) for i in specialists):
            for item in specialists:
                warnings.append(
                    f"a specialist for {self.name} ({describe_key(item.key)}) exists but this task asks for ({wanted}), so it is not used; "
                    f"{self.how_to_ask(item.key)}"
                )
        models = {ctx.backend_for(s).spec for s in steps if s.spec is not None}
        for item in (i for i in learned if i.kind == "calibration" and i.model in models and i.key != key):
            if ctx.calibration(self.name, item.model or "", key) is not None:
                continue
            if not item.key:
                warnings.append(
                    f"the calibration of {self.name} on {item.model} ({item.path}) was fitted before calibrations were kept per label set, "
                    f"so it is not used; fit it again: moa calibrate {self.name} DATA --model {item.model}"
                )
            else:
                warnings.append(
                    f"a calibration of {self.name} on {item.model} for ({describe_key(item.key)}) exists but this task asks for ({wanted}), "
                    f"so confidences are not calibrated; {self.how_to_ask(item.key)}"
                )
        return warnings

    def specialist_for(self, ctx: RunContext, data: InputT) -> Any:
        """The trained specialist that answers ``data``'s task, if there is one (``None``: the
        cascade has no specialist step for it)."""
        key = self.specialist_key(data)
        return None if key is None else ctx.specialist(self.name, key)

    def serves_key(self, key: str, data: InputT) -> bool:
        """Whether a specialist trained for the task ``key`` answers ``data``'s task (default: the
        same key; the extraction agent: a type set that covers the requested types)."""
        return key == self.specialist_key(data)

    async def specialist_answer(self, ctx: RunContext, specialist: Any, data: InputT) -> tuple[OutputT, float | None]:
        """The output of ``specialist`` (from :meth:`specialist_for`) for ``data`` and its confidence.
        The default (classifiers): embed the text, predict a label, :meth:`from_label`."""
        vectors = await ctx.embedder().aembed([str(getattr(data, self.text_field))])
        label, probability = specialist.predict(np.asarray(vectors, dtype=np.float32))[0]
        output = self.from_label(data, label, round(float(probability), 4))
        return output, self.confidence_of(output)

    def completion_prompt_with(self, data: InputT, examples: Sequence[Example]) -> str:
        """:meth:`completion_prompt` with extra demonstrations (stored examples) before the item.
        The default ignores them; classification agents override it."""
        return self.completion_prompt(data)

    def confidence_of(self, output: BaseModel) -> float | None:
        value = getattr(output, "confidence", None)
        return float(value) if isinstance(value, (int, float)) else None

    # --- one step of the cascade ---------------------------------------------------------

    async def run(self, ctx: RunContext, data: InputT, *, subtask: str | None = None) -> AgentRun:
        """Run ``data`` through the cascade (:mod:`moa.agent.cascade`): cheap steps first, escalating weak answers."""
        return await run_cascade(self, ctx, data, subtask)

    async def proceed(self, ctx: RunContext, data: InputT, prior: AgentRun, *, subtask: str | None = None) -> AgentRun:
        """Continue the cascade of an item parked for approval, from the step that waited."""
        return await run_cascade(self, ctx, data, subtask, prior=prior)

    async def attempt(self, ctx: RunContext, step: Step, data: InputT) -> Attempt:
        """One step's answer for ``data``, priced (never raises for a model failure). Its calls
        go through the door into the open scope. Raises only what the cascade decides on:
        :class:`~moa.routing.approvals.AwaitingApproval` and :class:`~moa.errors.ApprovalDenied`."""
        if step.name == SPECIALIST:
            return await self._specialist_attempt(ctx, data)
        backend = ctx.backend_for(step)
        with ctx.scope() as scope:
            try:
                output, raw = await self._model_attempt(ctx, step, data)
            except ApprovalDenied:
                raise
            except MoaError as exc:
                log.warning("agent_failed", agent=self.name, subtask=scope.subtask, model=backend.spec, code=str(exc.code), error=exc.message)
                return Attempt.priced(step.name, backend.spec, scope.usage, error=exc.info())
        return Attempt.priced(step.name, backend.spec, scope.usage, output=output, confidence=self.confidence_of(output), raw_confidence=raw)

    async def _model_attempt(self, ctx: RunContext, step: Step, data: InputT) -> tuple[OutputT, float | None]:
        backend = ctx.backend_for(step)
        caps = await backend.acapabilities()
        method = self._confidence_method(ctx, caps, data, step.name)
        if method != "logprobs" and caps.logprobs:
            caps = caps.model_copy(update={"logprobs": False})
        messages = await self._use_tools(ctx, step, data, caps)
        examples = await self._examples(ctx, data, caps, backend.spec)
        request = self.request(data, caps, messages, examples)
        if method == "samples":
            return await self._sampled(ctx, step, request, data, caps, ctx.settings.samples), None
        result = await generate_structured(ctx, step, request, self.decode_type(data, caps))
        if method == "logprobs" and not result.generation.logprobs and not (await backend.acapabilities()).logprobs:
            # the server ignored the request for logprobs (the backend now knows): ask again the way
            # a backend without them is asked, once, instead of keeping an answer with no confidence
            return await self._model_attempt(ctx, step, data)
        probs = await self._choice_probs(ctx, step, data, caps, result.value, result.generation)
        output = self.finish(data, result.value, result.generation, probs)
        return self._calibrated(ctx, backend, data, output)

    def _confidence_method(self, ctx: RunContext, caps: Capabilities, data: InputT, step: str) -> str:
        """``auto``: token logprobs when the backend has them; else agreement of k samples, but
        only when the answer could escalate (k calls per item are paid only where confidence
        decides something); else the model's own score."""
        method = ctx.settings.confidence
        has_choices = self.choices(data) is not None
        if method == "auto":
            if caps.logprobs:
                return "logprobs"
            policy = self.policy(ctx)
            steps = [s.name for s in policy.steps]
            can_escalate = policy.escalate and policy.threshold is not None and step in steps and steps.index(step) < len(steps) - 1
            return "samples" if has_choices and can_escalate else "self"
        if method == "logprobs" and not caps.logprobs:
            return "samples" if has_choices else "self"
        if method == "samples" and not has_choices:
            return "self"
        return method

    def _calibrated(self, ctx: RunContext, backend: ModelBackend, data: InputT, output: OutputT) -> tuple[OutputT, float | None]:
        """Apply the agent's calibration on this model for this task's label set (``moa calibrate``)
        to the output's confidence."""
        raw = self.confidence_of(output)
        key = self.specialist_key(data)
        calibration = ctx.calibration(self.name, backend.spec, key) if key is not None else None
        if calibration is None or raw is None:
            return output, None
        return output.model_copy(update={"confidence": round(calibration.apply(raw), 4)}), raw  # type: ignore[return-value]

    async def _examples(self, ctx: RunContext, data: InputT, caps: Capabilities, model: str) -> list[Example]:
        """The nearest stored examples that another (higher) model answered: a model's own
        answers are never its demonstrations (measured: self-examples cost SST-2 accuracy 0.89 → 0.835)."""
        k = ctx.settings.shots_from_examples
        key = self.specialist_key(data)
        if caps.chat or k == 0 or key is None or type(self).completion_prompt_with is ModelAgent.completion_prompt_with:
            return []
        try:
            found = await ctx.examples().nearest(self.name, key, str(getattr(data, self.text_field)), 2 * k)
            return [e for e in found if e.model != model][:k]
        except MoaError as exc:
            log.warning("examples_unavailable", agent=self.name, code=str(exc.code), error=exc.message)
            return []

    async def _sampled(self, ctx: RunContext, step: Step, request: GenerateRequest, data: InputT, caps: Capabilities, k: int) -> OutputT:
        """Confidence by agreement: k samples; the majority label wins with its share of votes."""
        choices = list(self.choices(data) or [])
        decode = self.decode_type(data, caps)

        async def sample(seed: int) -> tuple[BaseModel, Generation] | None:
            one = request.model_copy(update={"temperature": self.sample_temperature, "seed": seed})
            try:
                result = await generate_structured(ctx, step, one, decode)
            except InvalidOutput:
                return None
            return result.value, result.generation

        samples = await asyncio.gather(*(sample(seed) for seed in range(1, k + 1)))
        votes = [v for v in samples if v is not None]
        if not votes:
            raise InvalidOutput(ErrorCode.INVALID_OUTPUT, f"{ctx.backend_for(step).spec} gave no valid answer in {k} samples")
        counts = {c: sum(1 for v, _ in votes if str(getattr(v, self.choice_field)) == c) / k for c in choices}
        winner = max(counts, key=counts.__getitem__)
        decoded, gen = next((v, g) for v, g in votes if str(getattr(v, self.choice_field)) == winner)
        return self.finish(data, decoded, gen, counts)  # type: ignore[arg-type]

    async def _specialist_attempt(self, ctx: RunContext, data: InputT) -> Attempt:
        key = self.specialist_key(data)
        specialist = self.specialist_for(ctx, data)
        model = f"specialist:{self.name}"
        if specialist is None:
            error = UserError(
                ErrorCode.NOT_TRAINED,
                f"no specialist is trained for agent {self.name!r} ({key}); run `moa train {self.name} DATA` or drop 'specialist' from the cascade",
            ).info()
            return Attempt(step=SPECIALIST, model=model, error=error)
        started = time.perf_counter()
        try:
            output, confidence = await self.specialist_answer(ctx, specialist, data)
        except MoaError as exc:
            return Attempt(step=SPECIALIST, model=model, error=exc.info())
        scope = current_scope()
        usage = Usage(model=model, tier=SPECIALIST, latency_s=round(time.perf_counter() - started, 5), agent=self.name, subtask=scope and scope.subtask)
        ctx.budget.add((usage,))  # a local model: no tokens, no cost, but a call of the run
        if scope is not None:
            scope.usage.append(usage)
        return Attempt.priced(SPECIALIST, model, [usage], output=output, confidence=confidence)
