"""Score priors: one denoiser interface (`Prior`) for EDM, VE-score and VP-epsilon networks."""
from .base import (EDMPrior, GaussianPrior, Prior, PriorInfo, PriorMismatchError, VEScorePrior, VPEpsilonPrior,
                   linear_beta_alphas_cumprod, standard_noise)
from .registry import UnknownPriorError, available, load
from .checkpoints import NAMED_CONFIGS, CheckpointError, build_network, infer_named_config, load_checkpoint, load_network

__all__ = ["Prior", "PriorInfo", "PriorMismatchError", "EDMPrior", "VEScorePrior", "VPEpsilonPrior", "GaussianPrior",
           "linear_beta_alphas_cumprod", "standard_noise", "load_checkpoint", "load_network", "build_network",
           "NAMED_CONFIGS", "CheckpointError", "infer_named_config", "load", "available", "UnknownPriorError"]
