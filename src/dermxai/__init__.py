"""dermxai: honest skin-lesion classification on HAM10000 with checkable explanations."""

__version__ = "0.1.0"
