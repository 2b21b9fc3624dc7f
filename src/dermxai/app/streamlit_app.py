"""The dermxai web app: an upload, a phone camera or an example image -> calibrated probabilities, heatmap, advice.

Run with ``dermxai app`` (which calls ``streamlit run`` on this file); options after ``--`` reach this script:
``--model BUNDLE`` (repeatable) adds bundles to the ones installed under ``models/``.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import pandas as pd
import streamlit as st

from dermxai.app.address import lan_url, qr_png
from dermxai.data.labels import MALIGNANT
from dermxai.explain.cams import METHODS
from dermxai.inference import advice
from dermxai.inference.bundles import installed_bundles
from dermxai.inference.inputs import InvalidImage
from dermxai.inference.predictor import Ensemble, Explanation, Prediction, Predictor

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "mpo"]
ENSEMBLE = "Ensemble of all models"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="streamlit_app.py")
    parser.add_argument("--model", action="append", type=Path, default=[], help="a model bundle folder")
    return parser.parse_args(sys.argv[1:])


@st.cache_resource(show_spinner="Loading the model...")
def predictor(folder: str) -> Predictor:
    """One Predictor per bundle for the whole server (shared by every session)."""
    return Predictor(folder)


@st.cache_data(max_entries=64, show_spinner="Computing the heatmap...")
def explain(folder: str, data: bytes, method: str) -> Explanation:
    """Prediction and CAM of one image, cached so moving the opacity slider does not recompute them."""
    return predictor(folder).explain(data, method)


@st.cache_data(max_entries=64, show_spinner="Predicting...")
def predict_ensemble(folders: tuple[str, ...], data: bytes) -> Prediction:
    return Ensemble([predictor(f) for f in folders]).predict(data)


def example_gallery() -> bytes | None:
    """Buttons for the bundled example images; the chosen one's bytes (kept across reruns)."""
    images = sorted(p for p in EXAMPLES.glob("*.jpg"))
    if not images:
        st.info(f"No example images found in {EXAMPLES}.")
        return None
    columns = st.columns(len(images))
    for column, path in zip(columns, images):
        column.image(str(path), width="stretch")
        if column.button(f"{path.stem.split('_', 1)[0]} example", key=f"example-{path.name}", width="stretch"):
            st.session_state["example"] = str(path)
    chosen = st.session_state.get("example")
    return Path(chosen).read_bytes() if chosen else None


def image_source() -> tuple[bytes | None, str]:
    """The image the person chose (upload, camera or example) and a label for it."""
    source = st.radio("Image source", ["Upload a photo", "Phone or web camera", "Example images"], horizontal=True)
    if source == "Upload a photo":
        upload = st.file_uploader("Dermoscopic image of one lesion", type=UPLOAD_TYPES)
        return (upload.getvalue(), upload.name) if upload else (None, "")
    if source == "Phone or web camera":
        st.caption("Browsers allow the camera only on HTTPS pages or on localhost (see the sidebar).")
        shot = st.camera_input("Take a picture of the lesion")
        return (shot.getvalue(), "camera picture") if shot else (None, "")
    data = example_gallery()
    return data, Path(st.session_state.get("example", "")).name


def probability_chart(prediction: Prediction) -> None:
    table = pd.DataFrame({"class": list(prediction.probabilities),
                          "probability": list(prediction.probabilities.values())})
    st.bar_chart(table, x="class", y="probability", horizontal=True, sort=False, height=280,
                 alt="Calibrated probability of each of the seven classes")


def show_result(prediction: Prediction) -> None:
    top = prediction.top_class
    info = advice.CLASSES.get(top)
    if prediction.abstain:
        st.warning(advice.abstain_advice(prediction.abstain_reasons))
    st.subheader(f"Most similar to: {info.name if info else top} ({top})")
    st.markdown(f"Calibrated probability **{prediction.confidence:.0%}** · model `{prediction.model_id}`")
    probability_chart(prediction)
    st.markdown(f"**Malignant score** ({' + '.join(MALIGNANT)}): **{prediction.malignant_score:.0%}**")
    message = advice.malignant_advice(prediction.malignant_score, prediction.malignant_threshold)
    (st.error if prediction.malignant_flag else st.info)(message)
    if info:
        st.markdown(f"**About {info.name.lower()}.** {info.about}")
        st.markdown(f"**What to do.** {info.advice}")
    with st.expander("The seven classes"):
        for code, item in advice.CLASSES.items():
            st.markdown(f"- **{item.name}** (`{code}`): {item.about} *{item.advice}*")


def sidebar(models: dict[str, Path]) -> tuple[list[str], str, float, bool]:
    with st.sidebar:
        names = list(models) + ([ENSEMBLE] if len(models) > 1 else [])
        choice = st.selectbox("Model", names, help="Bundles in models/ and any --model given to `dermxai app`.")
        show_cam = st.toggle("Show heatmap (Grad-CAM family)", value=True)
        method = st.selectbox("Heatmap method", list(METHODS), disabled=not show_cam,
                              help="scorecam is slow on a CPU (one forward pass per feature map).")
        opacity = st.slider("Heatmap opacity", 0.0, 1.0, 0.45, 0.05, disabled=not show_cam)
        st.divider()
        url = lan_url(st.context.url)
        st.markdown("**Open on a phone**")
        st.image(qr_png(url), caption=url, width=180)
        st.caption("Phone browsers allow the camera only over **HTTPS** (or on localhost). On plain http:// the "
                   "upload works but the camera does not. Serve HTTPS with `dermxai app --ssl-cert cert.pem "
                   "--ssl-key key.pem` (Streamlit's `server.sslCertFile`/`server.sslKeyFile`); a self-signed "
                   "certificate works after accepting the browser's warning. See docs/app.md.")
        st.divider()
        st.caption(advice.ATTRIBUTION)
    folders = [str(p) for p in models.values()] if choice == ENSEMBLE else [str(models[choice])]
    return folders, method, opacity, show_cam


def main() -> None:
    st.set_page_config(page_title="dermxai", page_icon="🔬", layout="wide")
    st.title("dermxai: skin-lesion classifier with heatmaps")
    st.warning(f"**Not a medical device.** {advice.DISCLAIMER}")
    models = installed_bundles(arguments().model)
    if not models:
        st.error("No model bundle found: put one in models/default, set DERMXAI_MODEL, or pass --model.")
        st.stop()
    folders, method, opacity, show_cam = sidebar(models)
    data, label = image_source()
    if data is None:
        return
    left, right = st.columns([1, 1])
    try:
        if len(folders) > 1:
            prediction = predict_ensemble(tuple(folders), data)
            explanation = explain(folders[0], data, method) if show_cam else None
        elif show_cam:
            explanation = explain(folders[0], data, method)
            prediction = explanation.prediction
        else:
            prediction, explanation = predictor(folders[0]).predict(data), None
    except InvalidImage as error:
        st.error(f"Could not use {label or 'this file'}: {error}")
        return
    with left:
        if explanation is not None:
            image = explanation.overlay(opacity)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            caption = f"{explanation.method} heatmap for '{explanation.target_class}'"
            if len(folders) > 1:
                caption += f" from {Path(folders[0]).name} (the first ensemble member)"
            st.image(buffer.getvalue(), caption=caption, width="stretch")
            st.caption("Red areas influenced the prediction most. A heatmap shows where the model looked, "
                       "not why, and not whether it was right.")
        else:
            st.image(data, caption=label, width="stretch")
    with right:
        show_result(prediction)


main()
