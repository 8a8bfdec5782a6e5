"""`fbp` under its earlier module path; it lives in `recon.baselines.ct_analytic`, SIRT, CGLS and TV in
`recon.baselines.ct_iterative`."""
from recon.baselines.ct_analytic import FBP_FILTERS, fbp

__all__ = ["FBP_FILTERS", "fbp"]
