"""Explanations: CAMs (pytorch-grad-cam), scores against lesion masks, figures."""
