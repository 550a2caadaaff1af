"""``python -m mlplab``: the ``mlplab`` command (see :mod:`mlplab.about`)."""

from mlplab.about import main

main()
