"""The dataset error type, kept apart from the (pandas-based) indexer so light callers can import it."""


class DatasetError(ValueError):
    """A dataset that cannot be read as given; the message says which file and rows."""
