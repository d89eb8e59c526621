"""The single error type of the workload package.

Bad workload input is a user mistake, not a crash: the CLI turns a ``WorkloadError`` into a
one-line message and exit code 2, without a traceback. Subclassing ``ValueError`` keeps it
catchable by callers that only know the standard hierarchy.
"""

from __future__ import annotations

#: Latest arrival a trace may give (µs, about 146 000 years): the simulator's clock is an
#: int64 and arrivals past this are no request anyone meant to replay.
MAX_ARRIVAL_US = 2**62


class WorkloadError(ValueError):
    """Invalid workload parameters or trace content.

    The message is one line naming the offending flag, field or trace location, the value
    received and what is allowed, so a user can fix the input without reading code.
    """

    def __init__(self, message: str) -> None:
        # Keep the one-line contract even if a caller interpolates a multi-line value.
        super().__init__(" ".join(message.splitlines()))
