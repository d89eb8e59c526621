"""The shared-clock cluster: admission, routing and instances on one clock (docs/architecture.md)."""

from inference_sim.cluster.simulator import ClusterSimulator, SimulationOutcome

__all__ = ["ClusterSimulator", "SimulationOutcome"]
