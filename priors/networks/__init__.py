"""Networks: our size-agnostic EDM U-Net, and the published families (NCSN++, ADM, fastMRI U-Net / VarNet)."""
from .adm import ADMConfig, ADMUNet
from .fastmri_unet import Unet, UnetConfig, UnetInputError, normalize_unet_input
from .ncsnpp import NCSNpp, NCSNppConfig, SplitChannels, UnsupportedConfigError
from .varnet import NormUnet, SensitivityModel, VarNet, VarNetConfig

FastMRIUnet = Unet

__all__ = ["ADMConfig", "ADMUNet", "Unet", "FastMRIUnet", "UnetConfig", "UnetInputError", "normalize_unet_input",
           "NCSNpp", "NCSNppConfig", "SplitChannels", "UnsupportedConfigError", "NormUnet", "SensitivityModel",
           "VarNet", "VarNetConfig"]
