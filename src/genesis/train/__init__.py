"""Training infrastructure: shard dataset, pretraining loop, checkpoints, GPU leases, DDP.

Import the submodules directly (``genesis.train.checkpoint``, ``genesis.train.devices``,
...); this package imports nothing so that importing one part stays cheap.
"""
