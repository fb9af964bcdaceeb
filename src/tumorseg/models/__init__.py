from .ensemble import Ensemble
from .unet import UNet

__all__ = ["Ensemble", "UNet"]
