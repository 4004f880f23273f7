"""The deployment as a networkx graph: shards, processes, clusters and host lists.

Nodes are shards (``kind="shard"``) and processes (``kind="iface"``, ``"worker"`` or,
in a scripted scenario, ``"actor"``: a named process with its own prefix and channels),
each with its ``cluster``; a process also carries its ``router``, ``hash_seed`` and its
two host lists: ``hosts`` (normal channels) and ``response_hosts`` (response
channels, groups). An edge process -> shard means the process has that shard in a
host list. With one cluster both lists are all shards. With K clusters, shards and
workers are split evenly; interface servers spread requests over every shard, and
their home cluster is ``i % K``. Response routing is then either ``shared`` (one
ring of all shards, the documented design) or ``cluster`` (each process hashes
within its own cluster's shards, the naive design). Overrides replace both lists.
"""

from __future__ import annotations

import random

import networkx as nx

from sim.scenario import Scenario

__all__ = ["build_topology", "readable_shards"]


def _hash_seed(sc: Scenario, name: str) -> int:
    if sc.hash_seeds == "same":
        return 0
    return random.Random(f"{sc.seed}/{name}/hash_seed").randrange(1, 2**32)


def build_topology(sc: Scenario) -> nx.DiGraph:
    g = nx.DiGraph(clusters=sc.topology.clusters, responses=sc.topology.responses)
    k = sc.topology.clusters
    shards = sc.shard_names
    per = len(shards) // k
    cluster_shards = [shards[c * per:(c + 1) * per] for c in range(k)]
    for i, s in enumerate(shards):
        g.add_node(s, kind="shard", cluster=i // per)
    overrides = {o.name: o for o in sc.processes}
    wper = max(1, sc.workers // k)
    for name in sc.process_names[:sc.interface_servers + sc.workers]:
        is_iface = name.startswith("iface")
        idx = int(name.removeprefix("iface" if is_iface else "worker"))
        cluster = idx % k if is_iface else idx // wper
        hosts = shards if is_iface else cluster_shards[cluster]
        response_hosts = shards if sc.topology.responses == "shared" else cluster_shards[cluster]
        o = overrides.get(name)
        router = sc.router
        seed = _hash_seed(sc, name)
        if o is not None:
            router = o.router or router
            if o.hosts is not None:
                hosts = response_hosts = o.hosts
            if o.hash_seed is not None:
                seed = o.hash_seed
        g.add_node(name, kind="iface" if is_iface else "worker", cluster=cluster,
                   router=router, hash_seed=seed, hosts=tuple(hosts),
                   response_hosts=tuple(response_hosts))
        for s in set(hosts) | set(response_hosts):
            g.add_edge(name, s)
    for a in sc.actors:
        hosts = a.hosts or shards
        seed = a.hash_seed if a.hash_seed is not None else _hash_seed(sc, a.name)
        g.add_node(a.name, kind="actor", cluster=0, router=a.router or sc.router,
                   hash_seed=seed, hosts=tuple(hosts), response_hosts=tuple(hosts),
                   prefix=a.prefix, channels=a.channels, listening=a.listening)
        for s in hosts:
            g.add_edge(a.name, s)
    return g


def readable_shards(g: nx.DiGraph, process: str) -> frozenset:
    """The shards a process could ever read a response from: its response hosts."""
    return frozenset(g.nodes[process]["response_hosts"])
