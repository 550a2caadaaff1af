"""The classic MNIST MLP as a Lightning project: its networks, LightningModule, losses, metrics
and data sets. The run machinery (train.py's flow, records, resume, sweeps) is the mlplab
library's."""
