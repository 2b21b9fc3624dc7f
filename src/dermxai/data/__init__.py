"""Datasets: indexing, lesion-grouped splits, near-duplicate search, leakage audit and image cache."""

from dermxai.data.index import DatasetError, load_dataset
from dermxai.data.labels import CLASSES, MALIGNANT

__all__ = ["CLASSES", "MALIGNANT", "DatasetError", "load_dataset"]
