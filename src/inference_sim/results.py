"""The outcome of one run as data: summary, per-request records, per-instance blocks."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from inference_sim.metrics.output import results_document, stdout_report, write_json_atomic


@dataclass
class Results:
    """What :func:`inference_sim.simulate` returns.

    ``summary`` holds the reference's metric keys, then this project's own keys and
    ``config`` (the resolved configuration). ``requests`` holds one record per
    request that reached an instance, in generation order.
    """

    summary: dict[str, Any]
    requests: list[dict[str, Any]]
    instance_summaries: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The results-file document."""
        return results_document(self.summary, self.requests)

    def write_json(self, path: str | os.PathLike[str]) -> None:
        write_json_atomic(path, self.to_dict())

    def report(self) -> str:
        """The text ``blis run`` prints on stdout."""
        return stdout_report(self.summary, self.instance_summaries)

    def requests_frame(self) -> Any:
        """Per-request records as a pandas DataFrame (needs the ``data`` extra)."""
        try:
            import pandas as pd
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "requests_frame() needs pandas: pip install 'inference-sim[data]'"
            ) from exc
        return pd.DataFrame(self.requests)
