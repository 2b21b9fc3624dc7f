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

import numpy as np
import pandas as pd
import streamlit as st

from dermxai.app import advice
from dermxai.app.address import phone_url, qr_png
from dermxai.assets import EXAMPLES, example_images
from dermxai.data.labels import CLASS_NAMES, MALIGNANT
from dermxai.inference.bundles import installed_bundles
from dermxai.inference.cams import METHODS
from dermxai.inference.inputs import InvalidImage
from dermxai.inference.predictor import COLORMAP, Explanation, Prediction, Predictor
from dermxai.models.bundle import BundleConfig

UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff", "mpo"]


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="streamlit_app.py")
    parser.add_argument("--model", action="append", type=Path, default=[], help="a model bundle folder")
    return parser.parse_args(sys.argv[1:])


@st.cache_resource(show_spinner="Loading the model...")
def predictor(folder: str) -> Predictor:
    """One Predictor per bundle for the whole server (shared by every session)."""
    return Predictor(folder)


RESULT_ANCHOR = "dermxai-result"
PAGE_STYLE = (
    "<style>[data-testid='stAppDeployButton']{display:none}"
    "@media (max-width: 640px){.block-container{padding-top:2.5rem}}</style>"
)
METHOD_NAMES = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "hirescam": "HiResCAM",
    "layercam": "LayerCAM",
    "xgradcam": "XGrad-CAM",
    "eigencam": "Eigen-CAM",
}
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
    """The bundled example images as one row of small buttons: the chosen one's bytes, name and true diagnosis."""
    images = {path.name: path for path in example_images()}
    if not images:
        st.info(f"No example images found in {EXAMPLES}.")
        return None, "", None
    chosen = st.pills(
        "Examples from the test split (never trained on; their true diagnosis is known)",
        list(images),
        format_func=lambda name: name.split("_", 1)[0],
        key="example",
    )
    if not chosen:
        return None, "", None
    return images[chosen].read_bytes(), chosen, chosen.split("_", 1)[0]


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
            y=alt.Y("class:N", sort=None, title=None, axis=alt.Axis(labelOverlap=False)),
            color=alt.condition("datum.top", alt.value("#c0392b"), alt.value("#95a5a6")),
            tooltip=["class", alt.Tooltip("probability:Q", format=".1%")],
        )
        .properties(height=190)
    )
    st.altair_chart(chart, width="stretch")


def true_label(example_label: str | None, top: str | None) -> None:
    """An example's true diagnosis (and whether the model got it), shown even when the answer is withheld."""
    if example_label not in advice.CLASSES:
        return
    name = advice.CLASSES[example_label].name
    verdict = (
        "" if top is None else (": the model got it right" if example_label == top else ": the model got it wrong")
    )
    st.markdown(f"**True diagnosis of this example:** {name} (`{example_label}`){verdict}.")


def show_withheld(prediction: Prediction, data: bytes, example_label: str | None) -> None:
    """One screen for every withheld answer: the plain reasons, the image, an example's true label."""
    st.warning(f"**No answer.** {advice.NOT_DERMOSCOPY}")
    true_label(example_label, None)
    st.image(data, caption="Your image", width=320)


def show_result(prediction: Prediction, example_label: str | None) -> None:
    """The answer at a glance: class, probability, malignant flag and chart, in a phone's first screen."""
    top = prediction.top_class
    info = advice.CLASSES.get(top)
    st.subheader(f"Most similar to: {info.name if info else top} · {top}")
    st.markdown(f"Calibrated probability **{advice.percent(prediction.confidence)}**")
    if prediction.uncertain:
        st.warning(advice.uncertain_note(prediction.differential, prediction.uncertain_reasons))
    if prediction.most_probable != top:
        st.caption(advice.rare_class_note(top, prediction.most_probable))
    true_label(example_label, top)
    message = advice.malignant_advice(prediction.malignant_score, prediction.malignant_threshold)
    (st.error if prediction.malignant_flag else st.info)(
        f"**Malignant score** ({' + '.join(MALIGNANT)}): **{advice.percent(prediction.malignant_score)}**. {message}"
    )
    probability_chart(prediction)


def heatmap_note(config: BundleConfig, method: str) -> str:
    """What the app says about the heatmap ``method``: validated for this bundle, best tried but below a centred
    blob, another method than the validated one, or never validated (``config``: the bundle's BundleConfig)."""
    validated = METHOD_NAMES.get(config.cam_method, config.cam_method)
    if config.cam_choice is None:
        return "No heatmap method was validated against lesion masks for this model."
    if method == config.cam_method and not config.cam_choice.get("beats_gaussian", True):
        return (
            f"{validated} at `{config.target_layer()}` scored best of the heatmaps tried against lesion masks for "
            "this model, but below a plain blob at the image centre: treat it as a rough guide."
        )
    if method == config.cam_method:
        return f"{validated} at `{config.target_layer()}` is the method validated for this model against lesion masks."
    return (
        f"The method validated for this model is {validated}; others may disagree with it and light up background skin."
    )


def show_heatmap(folder: str, data: bytes, method: str, opacity: float, show_cam: bool) -> None:
    """The upload beside its heatmap (both at the upload's aspect ratio), the colour scale and what was validated."""
    original, overlay = st.columns(2)
    original.image(data, caption="Your image", width="stretch")
    if not show_cam:
        return
    with overlay:
        explanation = explain(folder, data, method)
        buffer = io.BytesIO()
        explanation.overlay(opacity).save(buffer, format="PNG")
        st.image(
            buffer.getvalue(),
            caption=f"{METHOD_NAMES.get(method, method)} heatmap for '{explanation.target_class}'",
            width="stretch",
        )
        st.markdown(colour_scale_html(), unsafe_allow_html=True)
    note = heatmap_note(predictor(folder).config, method)
    st.caption(
        f"{note} Bright areas influenced the prediction most; a heatmap shows where the model looked, not why, "
        "and not whether it was right. Dimmed borders: parts of the image the model did not see."
    )


def colour_scale_html(stops: int = 9) -> str:
    """The heatmap's colour scale as one CSS gradient bar with its two ends named."""
    import matplotlib

    colours = ", ".join(matplotlib.colors.to_hex(c) for c in matplotlib.colormaps[COLORMAP](np.linspace(0, 1, stops)))
    return (
        f'<div style="height:10px;border-radius:3px;background:linear-gradient(to right, {colours})"></div>'
        '<div style="display:flex;justify-content:space-between;font-size:0.8rem;opacity:0.8">'
        "<span>little influence</span><span>most influence</span></div>"
    )


def show_similar_cases(folder: str, prediction: Prediction) -> None:
    """The most similar confirmed training lesions, as a row of thumbnails with their diagnoses."""
    cases = [(case, predictor(folder).thumbnail(case.image_id)) for case in prediction.similar]
    cases = [(case, thumbnail) for case, thumbnail in cases if thumbnail is not None]
    if not cases:
        return
    st.markdown("**Similar confirmed cases** (training lesions whose images look most alike to the model)")
    st.image(
        [thumbnail for _, thumbnail in cases],
        caption=[f"{case.dx} · {case.similarity:.2f}" for case, _ in cases],
        width=96,
    )
    st.caption(
        "Diagnoses confirmed in HAM10000 (more than half by histopathology, the rest by follow-up, expert "
        "consensus or confocal microscopy); the number is the cosine similarity. "
        "Look-alikes explain by example: they are not a second opinion. " + advice.ATTRIBUTION
    )


def show_details(prediction: Prediction, metrics: dict | None) -> None:
    """What the flag's threshold means, the class blurb, the next step and the seven classes."""
    top = prediction.top_class
    malignant = (metrics or {}).get("malignant") or {}
    if prediction.malignant_threshold is not None and malignant.get("sensitivity") is not None:
        st.caption(
            advice.threshold_meaning(
                prediction.malignant_threshold, 0.9, malignant["sensitivity"], malignant["specificity"]
            )
        )
    info = advice.CLASSES.get(top)
    if info:
        st.markdown(f"**About {CLASS_NAMES[top]}.** {info.about}")
    candidates = [name for name, _ in prediction.differential]
    st.markdown(f"**What to do.** {advice.next_step(top, prediction.malignant_flag, candidates)}")
    with st.expander("The seven classes"):
        for code, item in advice.CLASSES.items():
            st.markdown(f"- **{item.name}** (`{code}`): {item.about} *{item.advice}*")


def scroll_into_view(key: str) -> None:
    """Scroll the page so the result starts at the top of a phone's screen (once per new result)."""
    import streamlit.components.v1 as components

    components.html(
        f"<script>/* {key} */ const r = window.parent.document.getElementById('{RESULT_ANCHOR}');"
        " if (r && r.getBoundingClientRect().top > window.parent.innerHeight * 0.3)"
        " r.scrollIntoView({block: 'start'});</script>",
        height=0,
    )


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
    st.markdown(PAGE_STYLE, unsafe_allow_html=True)
    st.title("dermxai")
    st.caption("Skin-lesion classifier with heatmaps, for learning")
    st.warning(f"**Not a medical device.** {advice.SHORT_DISCLAIMER}")
    with st.expander("Read this first"):
        st.markdown(advice.DISCLAIMER)
    models = installed_bundles(arguments().model)
    if not models:
        st.error("No model bundle found: put one in ./models, set DERMXAI_MODEL, or pass --model.")
        st.stop()
    folder, method, opacity, show_cam = sidebar(models)
    data, label, diagnosis = image_source()
    result = st.empty()  # replaces the previous result at once, before the new one is computed
    if data is not None:
        with result.container():
            # the margin keeps the class name clear of Streamlit's fixed header bar after the scroll
            st.markdown(f'<div id="{RESULT_ANCHOR}" style="scroll-margin-top: 4.5rem"></div>', unsafe_allow_html=True)
            try:
                prediction = predict(folder, data)
            except InvalidImage as error:
                st.error(f"Could not use {label or 'this file'}: {error}")
                prediction = None
            if prediction is not None and prediction.abstain:
                show_withheld(prediction, data, diagnosis)
            elif prediction is not None:
                show_result(prediction, diagnosis)
            # as soon as the answer is on the page, not after the heatmap (seconds on a CPU) and the look-alikes
            scroll_into_view(f"{label}-{len(data)}")
            if prediction is not None and not prediction.abstain:
                show_heatmap(folder, data, method, opacity, show_cam)
                show_similar_cases(folder, prediction)
                show_details(prediction, bundle_metrics(folder))
    model_card(bundle_metrics(folder), predictor(folder).model_id)


if __name__ == "__main__":  # `streamlit run` executes this file as __main__; deploy/spaces/app.py calls main()
    main()
