"""The shared-clock cluster: admission, routing and instances on one simulated clock."""

from inference_sim.cluster.simulator import ClusterSimulator, SimulationOutcome

__all__ = ["ClusterSimulator", "SimulationOutcome"]
