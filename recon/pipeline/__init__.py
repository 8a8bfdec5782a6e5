"""The `recon reconstruct` pipeline: per-file runs, result files, output folders, torchrun sharding."""
