"""``dermxai experiment``: several architectures trained with one recipe, one run folder each, resumable."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dermxai.data.errors import DatasetError
from dermxai.training.config import TrainConfig


def run_experiment(
    spec_file: Path,
    *,
    accelerator: str = "auto",
    devices: int | str = 1,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Train every ``models`` entry of the YAML ``spec_file`` (data, split, out, models, recipe); skip finished ones.

    Returns the run folders. A malformed spec raises ValueError naming the file and the problem.
    """
    import yaml

    from dermxai.training.run import train

    try:
        spec = yaml.safe_load(Path(spec_file).read_text())
        recipe, models = spec.get("recipe", {}), spec["models"]
        data, split, root = Path(spec["data"]), Path(spec["split"]), Path(spec["out"])
        configs = {arch: TrainConfig.from_dict({**recipe, "arch": arch}) for arch in models}
    except (AttributeError, KeyError, TypeError, ValueError, yaml.YAMLError) as error:
        raise ValueError(f"{spec_file}: {type(error).__name__}: {error}") from None
    runs = []
    for arch, config in configs.items():
        out = root / arch
        runs.append(out)
        if (out / "bundle").is_dir():
            log(f"{arch}: bundle already in {out}, skipped")
            continue
        resume = (out / "checkpoints" / "last.ckpt").is_file()
        log(f"{arch}: training into {out}" + (" (resuming)" if resume else ""))
        try:
            train(data, split, out, config, resume=resume, accelerator=accelerator, devices=devices, progress=progress)
        except DatasetError as error:
            raise DatasetError(f"{spec_file}: {error}") from None
    return runs
