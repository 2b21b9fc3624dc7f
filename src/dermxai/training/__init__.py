"""Training: batch augmentation, imbalance-aware losses, the Lightning module and data module, the run."""
