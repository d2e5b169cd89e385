"""The bottom layer: helpers every package may import and that import nothing of the project.

``utils.comm`` (rank, world size, gathering), ``utils.file_io`` (atomic writes), ``utils.serialization``
(tensor-only ``torch.load``), ``utils.logger`` (log set-up), ``utils.events`` (training scalars and their writers),
``utils.model_wrappers`` (unwrapping DDP / ``torch.compile``).  See docs/ARCHITECTURE.md for the layers above.
"""
