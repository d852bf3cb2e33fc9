"""Feature extraction (video, audio, text) into per-shard HDF5 files; see docs/hdf5_layout.md."""
