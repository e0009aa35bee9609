"""The agent layer: the agent types (function and model agents), the run context injected into
them, results, confidence, structured output, the escalation cascade, tools, and learning from
labelled data (``moa calibrate`` / ``moa train``)."""

__all__: list[str] = []
