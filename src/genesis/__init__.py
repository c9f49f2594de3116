"""Models Genesis, reproduced: self-supervised 3D pretraining by image restoration."""

__version__ = "0.1.0"
