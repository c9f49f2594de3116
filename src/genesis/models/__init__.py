"""Release-compatible 3D U-Nets (the PyTorch release's and the Keras release's), the
target tasks' classifiers, and strict weight I/O."""

from genesis.models.classifier import GenesisClassifier
from genesis.models.keras_h5 import load_keras_weights, read_keras_h5, save_keras_weights
from genesis.models.keras_unet import KerasClassifier, KerasUNet3D
from genesis.models.shapes import InputShapeError, check_input_shape
from genesis.models.unet import UNet3D
from genesis.models.weights import LoadReport, load_weights, read_weights, save_weights

__all__ = [
    "GenesisClassifier",
    "InputShapeError",
    "KerasClassifier",
    "KerasUNet3D",
    "LoadReport",
    "UNet3D",
    "check_input_shape",
    "load_keras_weights",
    "load_weights",
    "read_keras_h5",
    "read_weights",
    "save_keras_weights",
    "save_weights",
]
