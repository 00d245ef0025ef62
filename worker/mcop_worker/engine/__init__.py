"""The engine: the fixed block decomposition, its random streams, the kernels that simulate a
block, the block statistics and their merge in block order. Depends only on the job model."""
