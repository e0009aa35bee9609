"""Running a task: the plan and planners, the LangGraph nodes, scheduler and subtask execution,
the async driver, durable runs and the run index, the catalog of agents and graphs, declarative
graph files, reports and views of recorded runs."""

__all__: list[str] = []
