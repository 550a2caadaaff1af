"""mlplab's Optuna sweeper (Hydra finds sweepers in the ``hydra_plugins`` package only)."""
