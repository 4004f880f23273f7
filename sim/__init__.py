"""SimPy model of a sharded Channels deployment: interface servers, workers and
Redis shards, routed by `layer.routing`, with faults and a ledger of fates."""
