"""Inference: prediction backends (PyTorch eager or ONNX Runtime), preprocessing and the Predictor."""
