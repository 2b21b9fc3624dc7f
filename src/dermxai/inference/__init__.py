"""Inference: preprocessing from a bundle's config, input validation, the Predictor."""
