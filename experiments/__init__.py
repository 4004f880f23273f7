"""Experiments that reproduce the documented claims of the sharding model.

One module per question (`experiments.rendezvous`, ...), each defining one
`experiments.base.Experiment` subclass as ``EXPERIMENT``; `REGISTRY` maps the CLI
name to it, in the order ``run --all`` runs them. The framework (sweeps, seeds,
intervals, JSON, plots, summary) is `experiments.base`; the command line is
`experiments.cli`. `experiments.polling` reads request waits and latencies from a
run's event log for the two polling experiments.
"""

from experiments.base import ExperimentError

__all__ = ["ExperimentError", "registry"]


def registry() -> dict:
    """CLI name -> Experiment subclass, in run order (imported on first use)."""
    from experiments import (clusters, hash_seed, hot_shard, peaky_traffic,
                             receive_latency, rendezvous, resharding, resharding_rolling,
                             shard_failure, workers_per_shard)
    mods = (rendezvous, resharding, hot_shard, hash_seed, clusters, resharding_rolling,
            shard_failure, peaky_traffic, workers_per_shard, receive_latency)
    return {m.EXPERIMENT.name: m.EXPERIMENT for m in mods}
