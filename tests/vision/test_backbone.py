"""EfficientNet-Lite0: the ImageNet weights load strictly and classify real ants and bees."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import require_data

torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'headrace[vision]')")

from headrace.errors import ConfigError, DataError  # noqa: E402
from headrace.vision.backbones import (  # noqa: E402
    IMAGENET_ANT,
    IMAGENET_BEE,
    WEIGHTS_ENV,
    EfficientNetLite0,
    build_backbone,
    efficientnet_lite0_weights_path,
    load_lite0_imagenet,
)
from headrace.vision.fit import default_threads  # noqa: E402
from headrace.vision.images import batch_center, decode_to_tensor, normalize  # noqa: E402

pytestmark = pytest.mark.vision
torch.set_num_threads(default_threads())  # threads fighting over busy cores cost more than they give


def test_weights_load_strictly_every_key_matched():
    state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    net = EfficientNetLite0()
    result = net.load_state_dict(state, strict=True)
    assert (result.missing_keys, result.unexpected_keys) == ([], [])
    assert set(net.state_dict()) == set(state)
    assert {k.split(".")[0] for k in state} == {"_conv_stem", "_bn0", "_blocks", "_conv_head", "_bn1", "_fc"}
    assert len({k.split(".")[1] for k in state if k.startswith("_blocks.")}) == 16
    # the loaded tensors are the file's, not a random initialisation
    assert torch.equal(net._blocks[15]._project_conv.weight, state["_blocks.15._project_conv.weight"])


def test_a_weights_file_that_does_not_match_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    state = torch.load(efficientnet_lite0_weights_path(), map_location="cpu", weights_only=True)
    state["_blocks.99.extra"] = torch.zeros(1)
    del state["_fc.bias"]
    bad = tmp_path / "lite0.pth"
    torch.save(state, bad)
    monkeypatch.setenv(WEIGHTS_ENV, str(bad))
    with pytest.raises(DataError, match="does not match EfficientNet-Lite0"):
        load_lite0_imagenet(EfficientNetLite0())
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "missing.pth"))
    with pytest.raises(ConfigError, match="no such file"):
        efficientnet_lite0_weights_path()


def test_same_padding_keeps_tensorflow_shapes():
    net = EfficientNetLite0().eval()
    with torch.no_grad():
        for size in (65, 96):
            h = net.forward_prefix(torch.zeros(1, 3, size, size), 0)
            assert h.shape[-1] == -(-size // 32)  # ceil(size / 32), as TensorFlow's SAME gives
            assert net.forward_top(h, 0).shape == (1, 1280)


def test_split_forward_equals_the_whole_network():
    backbone = build_backbone("efficientnet_lite0")
    net = backbone.network.eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        whole = net.features(x)
        for k in (0, 3, 16):
            assert torch.allclose(net.forward_top(net.forward_prefix(x, k), k), whole, atol=1e-5)
    with pytest.raises(ConfigError, match="has 16 blocks"):
        backbone.check_unfreeze(17)


def test_unknown_or_missing_backbones_are_config_errors():
    with pytest.raises(ConfigError, match="unknown backbone"):
        build_backbone("vgg11")
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="needs torchvision"):
            build_backbone("resnet18")


def test_imagenet_head_puts_real_ants_and_bees_in_their_classes():
    """With its ImageNet head, the network names real photos 'ant' (310) and 'bee' (309), far above
    the 1-in-1000 of chance: a check that the weights, the padding and the input scale are right."""
    root = require_data("images", "val")
    photos = {
        IMAGENET_ANT: sorted((root / "ants").glob("*.jpg"))[:6],
        IMAGENET_BEE: sorted((root / "bees").glob("*.jpg"))[:6],
    }
    backbone = build_backbone("efficientnet_lite0")
    net = backbone.network.eval()
    hits, top5, right_proba = 0, 0, []
    for target, paths in photos.items():
        images = [decode_to_tensor(p.read_bytes(), 256) for p in paths]
        x = normalize(batch_center(images, 224), backbone.mean, backbone.std)
        with torch.no_grad():
            proba = torch.softmax(net(x), dim=1)
        hits += int((proba.argmax(1) == target).sum())
        top5 += sum(int(target in row) for row in proba.topk(5).indices.tolist())
        right_proba += proba[:, target].tolist()
    assert hits >= 8, f"only {hits} of 12 photos in their ImageNet class"
    assert top5 >= 10, f"only {top5} of 12 photos with their class in the top 5"
    assert sum(right_proba) / len(right_proba) > 0.3
