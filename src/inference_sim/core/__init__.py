"""The vocabulary every layer shares: requests and their states, the step's scheduler
output, time units, random streams, name suggestions. Imports nothing else from the project.
"""

from inference_sim.core.batch import SchedulerOutput, StepBatch
from inference_sim.core.request import Request, RequestState, as_token_array
from inference_sim.core.rng import RandomStreams
from inference_sim.core.time import NEVER, US_PER_MS, US_PER_S

__all__ = [
    "NEVER",
    "US_PER_MS",
    "US_PER_S",
    "RandomStreams",
    "Request",
    "RequestState",
    "SchedulerOutput",
    "StepBatch",
    "as_token_array",
]
