"""Formal model of the routing protocol; `model.properties` declares the properties
that the simulator, the model checker and the tests all evaluate."""
