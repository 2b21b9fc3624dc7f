"""User-facing front ends: the Streamlit app and the HTTP API, both on one Predictor."""
