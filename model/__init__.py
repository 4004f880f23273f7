"""Formal model of the routing protocol.

- `model.properties`: the property declarations that the simulator, the model checker
  and the tests all evaluate;
- `model.protocol`: the explicit-state model (processes, shards, requests and
  responses as tokens; actions and faults), routed by `layer/`;
- `model.checker`: breadth-first exploration, shortest counterexamples, results;
- `model.render`: counterexamples as numbered steps and a terminal sequence diagram;
- `model.cli`: the ``shardlab check`` subcommand.
"""


class CheckError(ValueError):
    """Bad input to the model checker (a fault or property name, a number out of
    range); the message is one line naming the flag, the value and what is allowed."""


__all__ = ["CheckError"]
