"""The dermxai web app: an upload, a phone camera or an example image -> calibrated probabilities, heatmap, advice.

Run with ``dermxai app`` (which calls ``streamlit run`` on this file); options after ``--`` reach this script:
``--model BUNDLE`` (repeatable) adds bundles to the ones installed under ``models/``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import pandas as pd
import streamlit as st

from dermxai.app import advice
from dermxai.app.address import phone_url, qr_png
from dermxai.assets import EXAMPLES, example_images
from dermxai.data.labels import CLASS_NAMES, MALIGNANT
from dermxai.inference.bundles import installed_bundles
from dermxai.inference.cams import METHODS
from dermxai.inference.inputs import InvalidImage
from dermxai.inference.predictor import Explanation, Prediction, Predictor

UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "mpo"]


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="streamlit_app.py")
    parser.add_argument("--model", action="append", type=Path, default=[], help="a model bundle folder")
    return parser.parse_args(sys.argv[1:])


@st.cache_resource(show_spinner="Loading the model...")
def predictor(folder: str) -> Predictor:
    """One Predictor per bundle for the whole server (shared by every session)."""
    return Predictor(folder)


APP_METHODS = [m for m in METHODS if m != "scorecam"]  # Score-CAM takes ~100 s on a CPU: offered by the CLI only
CACHE_ENTRIES = 8  # results hold at most a 1024-pixel copy of the image (Explanation), so the cache stays small


@st.cache_data(max_entries=CACHE_ENTRIES, show_spinner="Computing the heatmap...")
def explain(folder: str, data: bytes, method: str) -> Explanation:
    """Prediction and CAM of one image, cached so moving the opacity slider does not recompute them."""
    return predictor(folder).explain(data, method)


@st.cache_data(max_entries=CACHE_ENTRIES, show_spinner="Predicting...")
def predict(folder: str, data: bytes) -> Prediction:
    return predictor(folder).predict(data)


def bundle_metrics(folder: str) -> dict | None:
    """The bundle's test-split metrics (``metrics.json`` written by ``dermxai evaluate``), when it has them."""
    path = Path(folder) / "metrics.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def model_card(metrics: dict | None, model_id: str) -> None:
    """How good the model is, with 95% CIs, from its test-split evaluation (and which model it is)."""
    with st.expander("How good is this model?"):
        st.caption(f"Model `{model_id}` (bundle folder and a hash of its weights).")
        if not metrics:
            st.markdown("This model has no test-split evaluation (`metrics.json`) in its folder.")
            return
        ci = metrics.get("ci95", {})

        def cell(key: str) -> str:
            low, high = ci.get(key, [None, None])
            band = f" (95% CI {low:.0%}-{high:.0%})" if low is not None and high is not None else ""
            return f"{metrics[key]:.0%}{band}" if metrics.get(key) is not None else "n/a"

        st.markdown(
            f"On {metrics['n']:,} held-out test images of lesions it never saw in training:\n\n"
            f"- **Balanced accuracy** {cell('balanced_accuracy')}: the average share found of each of the 7 classes\n"
            f"- **Melanoma recall** {cell('melanoma_recall')}: share of melanomas it called melanoma\n"
            f"- **Skin-cancer flag** sensitivity {cell('malignant_sensitivity')}, specificity "
            f"{cell('malignant_specificity')}\n\n"
            "Dermoscopic images from other clinics or cameras may score lower. It is a teaching tool, not a doctor."
        )


def example_gallery() -> tuple[bytes | None, str, str | None]:
    """Compact buttons for the bundled example images: the chosen one's bytes, name and true diagnosis."""
    images = example_images()
    if not images:
        st.info(f"No example images found in {EXAMPLES}.")
        return None, "", None
    st.caption("Examples from the test split (never trained on; their true diagnosis is known):")
    for column, path in zip(st.columns(len(images)), images):
        if column.button(f"{path.stem.split('_', 1)[0]} example", key=f"example-{path.name}", width="stretch"):
            st.session_state["example"] = str(path)
    chosen = st.session_state.get("example")
    if not chosen:
        return None, "", None
    path = Path(chosen)
    return path.read_bytes(), path.name, path.name.split("_", 1)[0]


def image_source() -> tuple[bytes | None, str, str | None]:
    """The image the person chose (upload, camera or example), a label for it and its known diagnosis."""
    source = st.radio("Image source", ["Upload a photo", "Phone or web camera", "Example images"], horizontal=True)
    if source == "Upload a photo":
        upload = st.file_uploader("Dermoscopic image of one lesion", type=UPLOAD_TYPES)
        return (upload.getvalue(), upload.name, None) if upload else (None, "", None)
    if source == "Phone or web camera":
        st.caption("Browsers allow the camera only on HTTPS pages or on localhost (see the sidebar).")
        shot = st.camera_input("Take a picture of the lesion")
        return (shot.getvalue(), "camera picture", None) if shot else (None, "", None)
    return example_gallery()


def probability_chart(prediction: Prediction) -> None:
    """Horizontal bars on a fixed 0-100% axis, the top class highlighted."""
    import altair as alt

    table = pd.DataFrame(
        {"class": list(prediction.probabilities), "probability": list(prediction.probabilities.values())}
    )
    table["top"] = table["class"] == prediction.top_class
    chart = (
        alt.Chart(table)
        .mark_bar()
        .encode(
            x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1]), axis=alt.Axis(format="%"), title="probability"),
            y=alt.Y("class:N", sort=None, title=None),
            color=alt.condition("datum.top", alt.value("#c0392b"), alt.value("#95a5a6")),
            tooltip=["class", alt.Tooltip("probability:Q", format=".1%")],
        )
        .properties(height=230)
    )
    st.altair_chart(chart, width="stretch")


def show_result(prediction: Prediction, metrics: dict | None, example_label: str | None) -> None:
    if prediction.out_of_distribution:
        st.error(f"**No answer.** {advice.NOT_DERMOSCOPY}")
        return
    if prediction.abstain:
        st.warning(advice.abstain_advice(prediction.abstain_reasons))
        return
    top = prediction.top_class
    info = advice.CLASSES.get(top)
    st.subheader(f"Most similar to: {info.name if info else top} · {top}")
    st.markdown(f"Calibrated probability **{advice.percent(prediction.confidence)}**")
    if example_label in advice.CLASSES:
        verdict = "the model got it right" if example_label == top else "the model got it wrong"
        st.markdown(
            f"**True diagnosis of this example:** {advice.CLASSES[example_label].name} (`{example_label}`): {verdict}."
        )
    probability_chart(prediction)
    st.markdown(f"**Malignant score** ({' + '.join(MALIGNANT)}): **{advice.percent(prediction.malignant_score)}**")
    message = advice.malignant_advice(prediction.malignant_score, prediction.malignant_threshold)
    (st.error if prediction.malignant_flag else st.info)(message)
    malignant = (metrics or {}).get("malignant") or {}
    if prediction.malignant_threshold is not None and malignant.get("sensitivity") is not None:
        st.caption(
            advice.threshold_meaning(
                prediction.malignant_threshold, 0.9, malignant["sensitivity"], malignant["specificity"]
            )
        )
    if info:
        st.markdown(f"**About {CLASS_NAMES[top]}.** {info.about}")
    st.markdown(f"**What to do.** {advice.next_step(top, prediction.malignant_flag)}")
    with st.expander("The seven classes"):
        for code, item in advice.CLASSES.items():
            st.markdown(f"- **{item.name}** (`{code}`): {item.about} *{item.advice}*")


def sidebar(models: dict[str, Path]) -> tuple[str, str, float, bool]:
    with st.sidebar:
        choice = st.selectbox(
            "Model",
            list(models),
            help="Bundles in models/ and any --model given to `dermxai app` (an ensemble is one bundle: "
            "`dermxai ensemble`).",
        )
        show_cam = st.toggle("Show heatmap (Grad-CAM family)", value=True)
        default = predictor(str(models[choice])).config.cam_method
        method = st.selectbox(
            "Heatmap method",
            APP_METHODS,
            index=APP_METHODS.index(default) if default in APP_METHODS else 0,
            disabled=not show_cam,
            help="Score-CAM (minutes on a CPU) is available from `dermxai explain` only.",
        )
        opacity = st.slider("Heatmap opacity", 0.0, 1.0, 0.6, 0.05, disabled=not show_cam)
        st.divider()
        url = phone_url(st.context.url, st.get_option("server.address"))
        st.markdown("**Open on a phone**")
        if url:
            st.image(qr_png(url), caption=url, width=180)
        else:
            st.caption(
                "This app listens on this machine only (127.0.0.1). To open it from a phone on the same "
                "network, start it with `dermxai app --address 0.0.0.0`."
            )
        st.caption(
            "Phone browsers allow the camera only over **HTTPS** (or on localhost). On plain http:// the "
            "upload works but the camera does not. Serve HTTPS with `dermxai app --ssl-cert cert.pem "
            "--ssl-key key.pem` (Streamlit's `server.sslCertFile`/`server.sslKeyFile`); a self-signed "
            "certificate works after accepting the browser's warning. See docs/app.md."
        )
        st.divider()
        st.caption(advice.ATTRIBUTION)
    return str(models[choice]), method, opacity, show_cam


def main() -> None:
    st.set_page_config(page_title="dermxai", page_icon="🔬", layout="wide", menu_items={})
    st.markdown("<style>[data-testid='stAppDeployButton']{display:none}</style>", unsafe_allow_html=True)
    st.title("dermxai: skin-lesion classifier with heatmaps")
    st.warning(f"**Not a medical device.** {advice.SHORT_DISCLAIMER}")
    with st.expander("Read this first"):
        st.markdown(advice.DISCLAIMER)
    models = installed_bundles(arguments().model)
    if not models:
        st.error("No model bundle found: put one in ./models, set DERMXAI_MODEL, or pass --model.")
        st.stop()
    folder, method, opacity, show_cam = sidebar(models)
    model_card(bundle_metrics(folder), predictor(folder).model_id)
    data, label, diagnosis = image_source()
    if data is None:
        return
    with st.container():  # right under the compact picker, so the answer is in view after a tap
        try:
            prediction = predict(folder, data)
        except InvalidImage as error:
            st.error(f"Could not use {label or 'this file'}: {error}")
            return
        show_result(prediction, bundle_metrics(folder), diagnosis)
        original, overlay = st.columns(2)
        original.image(data, caption="Your image", width="stretch")
        if prediction.abstain or not show_cam:
            return
        with overlay:
            explanation = explain(folder, data, method)
            buffer = io.BytesIO()
            explanation.overlay(opacity).save(buffer, format="PNG")
            caption = f"{explanation.method} heatmap for '{explanation.target_class}'"
            st.image(buffer.getvalue(), caption=caption, width="stretch")
        st.caption(
            "Bright areas influenced the prediction most; areas the model ignored keep their own colours. "
            "A heatmap shows where the model looked, not why, and not whether it was right."
        )


if __name__ == "__main__":  # `streamlit run` executes this file as __main__; deploy/spaces/app.py calls main()
    main()
