"""Routing rules for one run: the escalation policy (which steps an answer may climb), budgets on
tokens, cost and time, and which steps wait for a person's approval."""

__all__: list[str] = []
