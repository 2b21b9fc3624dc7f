"""Streamlit Space entry point: the dermxai app on the default model installed with the dermxai wheel."""

from dermxai.app.streamlit_app import main

main()
