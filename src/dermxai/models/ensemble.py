"""An ensemble of bundles as one model: the mean of its members' logits, in one module and one ONNX graph.

The ensemble serves the **mean of the members' logits** (a normalised geometric mean of their
probabilities), not the mean of their probabilities: it keeps one logit vector per image, so the decision
rule, the temperature, the energy-based abstention, the gate and the CAMs work on it exactly as on a single
model, and ``dermxai calibrate`` fits them on the ensemble's own validation outputs. The ensemble is served at
its first member's input size; each member re-normalises that input to its own mean and std inside the graph,
and a member trained at a larger size sees it upsampled (bilinear, as PIL upsamples training images), so a
high-resolution member joins members of the usual size in one graph.
A member trained with a colour-constancy step (its record's ``colour_constancy``) applies it inside the graph
to the [0, 1] image before its own normalisation, so members with and without it share one input.

A member may be **gate-only** (its record has ``"votes": false``, ``dermxai ensemble --gate-only``): it runs on
the identity view so the gate can read its features, but its logits are not averaged. This lets the gate keep the
member whose features separate dermoscopy from everything else best while the vote keeps the members that
classify best.

With ``flips`` the graph also averages the logits over the four flips of the input (identity, left-right,
upside-down, both: the symmetries that keep its shape), so test-time augmentation is served, calibrated and
exported like the rest. The identity view runs first, on its own, so a hook on a member layer (the gate's
features) sees the image as given; CAMs are taken with :func:`plain_views` (one view, one backward pass).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dermxai.preprocessing import colour_correct


class MeanLogits(nn.Module):
    """``members`` applied to one input batch (and its flips when ``flips``); returns the mean of their logits.

    ``sizes``: each member's input size (height, width), or None where it takes the ensemble's input as it is.
    ``votes``: whether each member's logits join the mean (False: gate-only, run once for its features).
    ``constancies``: each member's colour-constancy step (``dermxai.preprocessing.COLOUR_CONSTANCY``) or None.
    """

    def __init__(
        self,
        members: Sequence[nn.Module],
        norms: Sequence[tuple[Sequence[float], Sequence[float]]],
        served: tuple[Sequence[float], Sequence[float]],
        flips: bool = False,
        sizes: Sequence[tuple[int, int] | None] | None = None,
        votes: Sequence[bool] | None = None,
        constancies: Sequence[str | None] | None = None,
    ) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.votes = list(votes or [True] * len(members))
        self.constancies = list(constancies or [None] * len(members))
        self.flips = flips
        self.sizes = list(sizes or [None] * len(members))
        # flat rows of (mean, std): a rank-5 stack would stop `model.to(memory_format=torch.channels_last)`
        self.register_buffer("served", torch.tensor([*served[0], *served[1]], dtype=torch.float32), persistent=False)
        self.register_buffer("norms", torch.tensor([[*m, *s] for m, s in norms], dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = []
        unit = x * self.served[3:].view(1, 3, 1, 1) + self.served[:3].view(1, 3, 1, 1)  # back to [0, 1]
        parts = zip(self.members, self.sizes, self.votes, self.constancies, self.norms)
        for member, size, votes, constancy, norm in parts:  # each member: its colour step, its normalisation
            view = (colour_correct(unit, constancy) - norm[:3].view(1, 3, 1, 1)) / norm[3:].view(1, 3, 1, 1)
            if size is not None and tuple(view.shape[-2:]) != tuple(size):
                view = F.interpolate(view, size=tuple(size), mode="bilinear", align_corners=False)
            out = member(view)
            if not votes:  # gate-only: the forward pass feeds the gate's hook; its logits are not averaged
                continue
            if self.flips:  # the three other views in one batch, after the identity view
                flipped = member(torch.cat([view.flip(3), view.flip(2), view.flip(2, 3)]))
                out = (out + flipped.unflatten(0, (3, -1)).sum(0)) / 4
            logits.append(out)
        return torch.stack(logits).mean(0)


@contextmanager
def plain_views(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` with its flip averaging switched off meanwhile (for CAMs: one view, one backward pass)."""
    flips = getattr(model, "flips", False)
    if flips:
        model.flips = False
    try:
        yield model
    finally:
        if flips:
            model.flips = True


def build_ensemble(
    members: Sequence[dict[str, Any]],
    served_norm: tuple[Sequence[float], Sequence[float]],
    num_classes: int,
    flips: bool = False,
) -> MeanLogits:
    """An untrained :class:`MeanLogits` for the member records of a bundle config (``arch``, ``mean``, ``std``,
    and ``height``/``width`` where a member's input size differs from the ensemble's)."""
    from dermxai.models.registry import create_model

    nets = [create_model(m["arch"], weights="none", num_classes=num_classes)[0] for m in members]
    sizes = [(m["height"], m["width"]) if "height" in m else None for m in members]
    votes = [m.get("votes", True) for m in members]
    constancies = [m.get("colour_constancy") for m in members]
    norms = [(m["mean"], m["std"]) for m in members]
    return MeanLogits(nets, norms, served_norm, flips, sizes, votes, constancies)


def make_ensemble(
    member_dirs: Sequence[Path],
    out: Path,
    explain_member: int = 0,
    flips: bool = False,
    gate_members: Sequence[int] | None = None,
    gate_only: Sequence[Path] = (),
) -> Path:
    """Write an ensemble bundle of ``member_dirs`` to ``out``; heatmaps come from ``explain_member``, the gate's
    features from ``gate_members`` (indices into ``member_dirs`` then ``gate_only``; each one's gate layer, joined
    in that order; default: the ``gate_only`` bundles if any, else the explain member). ``gate_only`` bundles run
    for the gate's features and do not vote;
    ``flips`` serves the mean over the four flips too (one member is then allowed: a model with served TTA).
    The ensemble's input size is the first member's; the others' may be larger (they see it upsampled).

    The new bundle is uncalibrated (no decision rule, temperature 1, no threshold, no gate): run
    ``dermxai calibrate`` and ``dermxai gate --write`` on it, as on any bundle, to fit them on its own outputs.
    """
    from dermxai.models.bundle import (
        ENSEMBLE_ARCH,
        GATE_LAYER_JOIN,
        BundleConfig,
        BundleError,
        load_bundle,
        save_bundle,
        weights_digest,
    )

    if len(member_dirs) < (1 if flips else 2):
        raise BundleError("an ensemble needs at least two member bundles (or one, with --flips)")
    voters = len(member_dirs)
    if not 0 <= explain_member < voters:
        raise BundleError(f"--explain-member must be between 0 and {voters - 1}, not {explain_member}")
    member_dirs = [*member_dirs, *gate_only]
    gate_members = list(gate_members or range(voters, len(member_dirs)) or [explain_member])
    for index in gate_members:
        if not 0 <= index < len(member_dirs):
            raise BundleError(f"--gate-member must be between 0 and {len(member_dirs) - 1}, not {index}")
    if len(set(gate_members)) != len(gate_members):
        raise BundleError(f"--gate-member lists a member twice ({', '.join(map(str, gate_members))})")
    loaded = [load_bundle(folder) for folder in member_dirs]
    configs = [config for _, config in loaded]
    first = configs[0]
    for folder, config in zip(member_dirs, configs):
        if config.members is not None:
            raise BundleError(f"{folder} is itself an ensemble: list its members instead")
        if config.classes != first.classes:
            raise BundleError(
                f"{folder}: members must share classes ({', '.join(first.classes)}), not {', '.join(config.classes)}"
            )
        if config.height < first.height or config.width < first.width:
            raise BundleError(
                f"{folder}: its input size {config.height}x{config.width} is smaller than the first member's "
                f"({first.height}x{first.width}, the ensemble's): list the member with the smallest input first"
            )
    sizes = [None if c.size == first.size else c.size for c in configs]
    votes = [i < voters for i in range(len(member_dirs))]
    norms = [(c.mean, c.std) for c in configs]
    constancies = [c.colour_constancy for c in configs]
    model = MeanLogits([m for m, _ in loaded], norms, (first.mean, first.std), flips, sizes, votes, constancies)
    records = tuple(
        {
            "arch": c.arch,
            "mean": list(c.mean),
            "std": list(c.std),
            "source": Path(folder).resolve().name,
            "weights_sha256": weights_digest(folder),
            "val_bacc": c.val_bacc,
            "seed": c.seed,
            "recipe": c.recipe,
            **({} if c.size == first.size else {"height": c.height, "width": c.width}),
            **({} if vote else {"votes": False}),
            **({} if c.colour_constancy is None else {"colour_constancy": c.colour_constancy}),
        }
        for folder, c, vote in zip(member_dirs, configs, votes)
    )
    chosen = configs[explain_member]
    gates = [(i, configs[i].feature_layer()) for i in gate_members]
    gate_layer = (
        None
        if not all(layer for _, layer in gates)
        else GATE_LAYER_JOIN.join(f"members.{i}.{layer}" for i, layer in gates)
    )
    config = BundleConfig(
        arch=ENSEMBLE_ARCH,
        classes=first.classes,
        height=first.height,
        width=first.width,
        mean=first.mean,
        std=first.std,
        members=records,
        flip_tta=flips or None,
        cam_layer=f"members.{explain_member}.{chosen.target_layer()}",
        cam_method=chosen.cam_method,
        gate_layer=gate_layer,
        weights="members",
        train_time_s=sum(c.train_time_s or 0 for c in configs),
        dataset_fingerprint=first.dataset_fingerprint,
        split_fingerprint=first.split_fingerprint,
        hardware=first.hardware,
    )
    views = ", each over 4 flips" if flips else ""
    extra = f", gate features also from {len(gate_only)} gate-only member(s)" if gate_only else ""
    return save_bundle(out, model, config, note=f"ensemble of {voters}: mean of logits{views}{extra}")
