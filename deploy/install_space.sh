#!/bin/sh
# The install step of a Streamlit Space, shared by deploy/Dockerfile and tests/test_deploy.py:
# the Space folder's requirements.txt, nothing else, into the environment of the given Python.
# Usage: deploy/install_space.sh PYTHON SPACE_FOLDER
set -eu
python="$1"
cd "$2"
"$python" -m pip install --disable-pip-version-check -r requirements.txt
