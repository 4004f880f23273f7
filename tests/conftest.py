"""Hypothesis profiles: ``dev`` (the default) and ``ci`` (derandomised), chosen by ``CI``."""

import os

from hypothesis import settings

settings.register_profile("dev")
settings.register_profile("ci", derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")
