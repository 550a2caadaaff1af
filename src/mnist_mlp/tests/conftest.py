"""The project's tests: its networks, module, data and training flow, run for real."""

from mlplab.testing import isolated_environment  # noqa: F401  (autouse fixture)
