"""Training MCN: clip sampling and cutting (shared with evaluation), the HDF5 dataset, the loop."""
