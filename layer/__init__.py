"""Shard selection for Channels' Redis channel layers, one profile per release.

Pure code, standard library only (the optional `layer.live` adapter imports the
installed channels_redis). `sim/` and `model/` route every message through here.
"""
