"""MCN: the network, its loss terms and the online k-means behind the clustering loss."""

from mcnflow.model.mcn import MCN, MCNOutput, MODALITIES, PAIRS, build_model, load_model, modalities_of

__all__ = ["MCN", "MCNOutput", "MODALITIES", "PAIRS", "build_model", "load_model", "modalities_of"]
