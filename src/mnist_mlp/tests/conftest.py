"""The project's tests: its networks, module, data and training flow, run for real."""

from mlplab.testing import (  # noqa: F401  (autouse fixtures)
    default_signal_handlers,
    isolated_environment,
)
