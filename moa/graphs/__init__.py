"""Built-in graphs (sources: the repository's ``graphs/`` folder; see :mod:`moa._builtins`)."""

from moa._builtins import extend_path

__path__ = extend_path(list(__path__), "graphs")
