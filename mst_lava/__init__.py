"""mst_lava: Masked Spiking Transformer from PyTorch training to Loihi through Lava."""

__version__ = "0.1.0"
