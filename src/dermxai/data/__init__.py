"""Datasets: indexing, lesion-grouped splits, near-duplicate search, leakage audit and image cache."""

from dermxai.data.errors import DatasetError
from dermxai.data.labels import CLASSES, MALIGNANT

__all__ = ["CLASSES", "MALIGNANT", "DatasetError", "load_dataset"]


def __getattr__(name: str):
    """Import the pandas-based indexer only when it is used (keeps `dermxai predict` light)."""
    if name == "load_dataset":
        from dermxai.data.index import load_dataset

        return load_dataset
    raise AttributeError(name)
