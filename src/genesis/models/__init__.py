"""Release-compatible 3D U-Net, the target tasks' classifier, and strict weight I/O."""

from genesis.models.classifier import GenesisClassifier
from genesis.models.shapes import InputShapeError, check_input_shape
from genesis.models.unet import UNet3D
from genesis.models.weights import LoadReport, load_weights, read_weights, save_weights

__all__ = [
    "GenesisClassifier",
    "InputShapeError",
    "LoadReport",
    "UNet3D",
    "check_input_shape",
    "load_weights",
    "read_weights",
    "save_weights",
]
