"""Diagnosis codes shared by every part of dermxai."""

CLASSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
"""The seven HAM10000 diagnoses, in the order models use unless a bundle says otherwise."""

MALIGNANT: tuple[str, ...] = ("akiec", "bcc", "mel")
"""Classes summed into the malignant-vs-benign score."""

CLASS_NAMES: dict[str, str] = {
    "akiec": "actinic keratosis / intraepithelial carcinoma (Bowen's disease)",
    "bcc": "basal cell carcinoma",
    "bkl": "benign keratosis-like lesion",
    "df": "dermatofibroma",
    "mel": "melanoma",
    "nv": "melanocytic nevus (mole)",
    "vasc": "vascular lesion",
}
