"""Experiments that reproduce the documented claims of the sharding model."""
