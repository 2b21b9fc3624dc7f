"""Run the shared reference fine-tune loop unchanged and add what its report lacks: 95% CIs on validation.

    python experiments/reference_run.py --data ../shared/data/ham10000 --split splits/ham10000_seed0.csv \
        --arch lite0 --height 150 --width 200 --epochs 10 --out runs/reference_lite0

Every argument goes to ``../shared/reference/finetune_reference.py`` (``--reference`` names another copy). Its
``scores`` function is wrapped to keep the final flip-averaged validation probabilities of the last and the EMA
weights; their balanced accuracies (argmax and prior-corrected, tau 0.5 and 1) get lesion-grouped bootstrap CIs, as
`dermxai evaluate` computes them, written to ``OUT/reference_ci.json``. The reference's test figures are its own
report; this script adds nothing on test.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from dermxai.evaluation.metrics import balanced_accuracy, bootstrap_ci

DEFAULT_REFERENCE = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "finetune_reference.py"


def load_reference(path: Path):
    """The reference script as a module (its ``main`` not yet run)."""
    spec = importlib.util.spec_from_file_location("finetune_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def argument(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def intervals(y: np.ndarray, probs: np.ndarray, prior: np.ndarray, lesions: np.ndarray) -> dict[str, dict]:
    """Balanced accuracy at argmax and at tau 0.5 / 1, each with its lesion-grouped 95% bootstrap CI."""
    log_p = np.log(np.clip(probs, 1e-9, 1))
    rules = {"argmax": log_p, "tau_0.5": log_p - 0.5 * np.log(prior), "tau_1.0": log_p - np.log(prior)}
    predicted = {name: scores.argmax(1) for name, scores in rules.items()}
    k = probs.shape[1]

    def statistic(index: np.ndarray) -> dict[str, float]:
        return {name: balanced_accuracy(y[index], p[index], k) for name, p in predicted.items()}

    ci = bootstrap_ci(statistic, lesions)
    return {
        name: {"value": round(balanced_accuracy(y, p, k), 4), "ci95": [round(v, 4) for v in ci[name]]}
        for name, p in predicted.items()
    }


def main() -> None:
    argv = sys.argv[1:]
    path = Path(argument(argv, "--reference")) if "--reference" in argv else DEFAULT_REFERENCE
    if "--reference" in argv:
        at = argv.index("--reference")
        argv = argv[:at] + argv[at + 2 :]
    reference = load_reference(path)
    calls: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    original = reference.scores

    def recording_scores(y, p, prior):
        calls.append((np.asarray(y), np.asarray(p), np.asarray(prior)))
        return original(y, p, prior)

    reference.scores = recording_scores
    sys.argv = [str(path), *argv]
    reference.main()
    # main's last four calls: last weights on val, test, then the EMA on val, test
    (y_val, p_last, prior), _, (_, p_ema, _), _ = calls[-4:]
    out_dir = Path(argument(argv, "--out"))
    np.savez(out_dir / "reference_val_probs.npz", y=y_val, last=p_last, ema=p_ema, prior=prior)
    data, split = Path(argument(argv, "--data")), Path(argument(argv, "--split"))
    table = pd.read_csv(split)
    meta = pd.read_csv(data / "HAM10000_metadata.csv").set_index("image_id")
    lesions = meta.loc[table[table.split == "val"].image_id, "lesion_id"].to_numpy()
    out = {
        "reference": str(path),
        "argv": argv,
        "n_val": len(y_val),
        "last_val": intervals(y_val, p_last, prior, lesions),
        "ema_val": intervals(y_val, p_ema, prior, lesions),
        "note": "flip-averaged (2 views) probabilities, as the reference scores them; lesion-grouped bootstrap, 1000",
    }
    target = out_dir / "reference_ci.json"
    target.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
