"""Educational advice, kept as data: what each class is, what a result means, what to do next.

The wording never states a diagnosis: it describes what the model's output resembles and points to a
dermatologist, sooner for the three classes that are skin cancers or precancers (akiec, bcc, mel).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dermxai.data.labels import CLASS_NAMES, MALIGNANT

DISCLAIMER = (
    "dermxai is a research and teaching tool, not a medical device. It cannot diagnose skin cancer and "
    "must not be used to decide whether to see a doctor: if a spot worries you, changes, bleeds or itches, "
    "see a dermatologist whatever this tool shows. It was trained on dermoscopic images (taken through a "
    "dermatoscope); ordinary phone photos look different and make its output less reliable."
)
SHORT_DISCLAIMER = (
    "A research and teaching tool: it cannot diagnose skin cancer. If a spot worries you, see a dermatologist."
)
ATTRIBUTION = (
    "Trained on HAM10000 (Tschandl P., Rosendahl C., Kittler H. The HAM10000 dataset, a large collection of "
    "multi-source dermatoscopic images of common pigmented skin lesions. Sci. Data 5, 180161 (2018)), "
    "licensed CC BY-NC 4.0: non-commercial use only, with attribution."
)


@dataclass(frozen=True)
class ClassAdvice:
    """What a class is and what to do when the model's output resembles it."""

    code: str
    about: str
    advice: str

    @property
    def name(self) -> str:
        """The class's name (``dermxai.data.labels.CLASS_NAMES``), capitalised for a heading."""
        name = CLASS_NAMES[self.code]
        return name[0].upper() + name[1:]


SEE_SOON = "Show this spot to a dermatologist soon (within a few weeks); do not wait for it to change."
CHECK_IF_CHANGING = (
    "Usually harmless; have it checked by a doctor if it grows, changes shape or colour, "
    "bleeds, itches or looks different from your other spots."
)

CLASSES: dict[str, ClassAdvice] = {
    "akiec": ClassAdvice(
        "akiec",
        "Rough, scaly patches from long sun exposure. Actinic keratoses are precancers; Bowen's disease is a "
        "skin cancer confined to the top layer of the skin. Both are treatable, usually simply.",
        SEE_SOON,
    ),
    "bcc": ClassAdvice(
        "bcc",
        "The most common skin cancer. It grows slowly and rarely spreads, but keeps growing into nearby "
        "tissue if left alone, so it is treated, usually by a small operation.",
        SEE_SOON,
    ),
    "bkl": ClassAdvice(
        "bkl",
        "Seborrhoeic keratoses, solar lentigines (sun spots) and lichen planus-like keratoses: common, "
        "harmless growths. Some look like melanoma, even to specialists.",
        CHECK_IF_CHANGING,
    ),
    "df": ClassAdvice(
        "df",
        "A small, firm, harmless bump in the skin, often on the legs, sometimes after an insect bite.",
        CHECK_IF_CHANGING,
    ),
    "mel": ClassAdvice(
        "mel",
        "A skin cancer of pigment cells. Found early it is usually cured by a small operation; found late it "
        "can spread, which is why a suspicious spot should be examined soon.",
        SEE_SOON,
    ),
    "nv": ClassAdvice(
        "nv",
        "An ordinary mole: harmless, and by far the most common class in the training data. Watch moles "
        "with the ABCDE rule: Asymmetry, irregular Border, several Colours, Diameter over 6 mm, Evolving.",
        CHECK_IF_CHANGING,
    ),
    "vasc": ClassAdvice(
        "vasc",
        "Cherry angiomas, angiokeratomas, pyogenic granulomas and small bleeds in the skin: made of blood "
        "vessels and usually harmless. A spot that bleeds easily or grows fast should still be checked.",
        CHECK_IF_CHANGING,
    ),
}

MALIGNANT_FLAGGED = (
    "The combined score of the three skin-cancer classes (melanoma, basal cell carcinoma, actinic keratosis / "
    "intraepithelial carcinoma) is {score:.0%}, at or above this model's threshold of {threshold:.0%}, chosen "
    "on validation images. This is not a diagnosis, but it is a reason to show this spot to a dermatologist "
    "soon (within a few weeks)."
)
MALIGNANT_BELOW = (
    "The combined score of the three skin-cancer classes is {score:.0%}, below this model's threshold of "
    "{threshold:.0%}. That does not rule out skin cancer: the model misses some. Have the spot checked if it "
    "grows, changes shape or colour, bleeds or itches."
)
MALIGNANT_NO_THRESHOLD = (
    "The combined score of the three skin-cancer classes is {score:.0%}. There is no threshold for this model "
    "(none was chosen on validation images), so the score is not turned into a yes/no flag."
)
NOT_DERMOSCOPY = (
    "This does not look like a dermoscopic image of a single skin lesion, so the model gives no answer. "
    "It was trained only on close-up pictures taken through a dermatoscope, and this picture's colours and "
    "textures are unlike all of them: any diagnosis would be a guess. Photographs, documents, screenshots, "
    "other medical images and ordinary phone photos of skin are withheld on purpose."
)
THRESHOLD_MEANING = (
    "The threshold {threshold:.0%} was chosen on validation images so that about {target:.0%} of skin "
    "cancers score at or above it. On the test images it flagged {sensitivity:.0%} of the cancers and "
    "{false_alarms:.0%} of the benign lesions (about 1 in {one_in} benign spots gets this warning)."
)


def threshold_meaning(threshold: float, target: float, sensitivity: float, specificity: float) -> str:
    """What the malignant threshold means in plain numbers (from the bundle's metrics on test)."""
    false_alarms = 1 - specificity
    return THRESHOLD_MEANING.format(
        threshold=threshold,
        target=target,
        sensitivity=sensitivity,
        false_alarms=false_alarms,
        one_in=max(1, round(1 / max(false_alarms, 1e-9))),
    )


def next_step(top_class: str, flagged: bool | None, differential: Sequence[str] = ()) -> str:
    """What to do, never contradicting the malignant flag on the same screen.

    When the flag fires, the skin-cancer classes of the differential are named instead of the top class's
    reassurance.
    """
    if flagged:
        cancers = [] if top_class in MALIGNANT else [CLASSES[c].name for c in differential if c in MALIGNANT]
        return (f"The answers it weighs include {' and '.join(cancers)}. " if cancers else "") + SEE_SOON
    return CLASSES[top_class].advice if top_class in CLASSES else CHECK_IF_CHANGING


UNCERTAIN = "**Uncertain.** It could be {classes}: {reasons}. A sharper, well-lit dermoscopic image may help."


def uncertain_note(differential: Sequence[tuple[str, float]], reasons: Sequence[str]) -> str:
    """The differential of an uncertain answer, in words: "bcc (41%), df (30%) or nv (22%)"."""
    named = [f"{code} ({percent(p)})" for code, p in differential]
    classes = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " or " + named[-1]
    return UNCERTAIN.format(classes=classes, reasons="; ".join(reasons))


def malignant_advice(score: float, threshold: float | None) -> str:
    """The sentence about the malignant score; says "no threshold" rather than inventing one."""
    if threshold is None:
        return MALIGNANT_NO_THRESHOLD.format(score=score)
    template = MALIGNANT_FLAGGED if score >= threshold else MALIGNANT_BELOW
    return template.format(score=score, threshold=threshold)


RARE_CLASS_NOTE = (
    "{likely} is more probable, because it is far more common; the model names {top} because this image looks "
    "more like {top} than most {likely} do (its answers are tuned to find every class, the rare ones too)."
)


def rare_class_note(top: str, most_probable: str) -> str:
    """Why the answer is not the most probable class (the decision rule corrects for how common each class is)."""
    return RARE_CLASS_NOTE.format(top=top, likely=most_probable)


def percent(p: float) -> str:
    """A probability for people: "> 99%" and "< 1%" at the ends (a model is never 100% sure), else whole percent."""
    if p >= 0.995:
        return "> 99%"
    if p < 0.005:
        return "< 1%"
    return f"{p:.0%}"
