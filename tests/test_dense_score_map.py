"""Dense evaluation averages the class score map (Simonyan & Zisserman 2015, Sec. 3.2): on an
input that gives a 2x2 or larger map, the logits equal the mean of the fully-connected head over
every window of the feature map (a summed map would be 4x or more of it)."""

from __future__ import annotations

import pytest
import torch
from helpers.modules import quick_backbone

from lit_classifiers.eval_protocols import dense_logits, protocol_logits


# vgg11 (slow): the same averaging at ~10 GMACs a pass, on the 256x256 its 7x7 head needs for a
# 2x2 map; its head is held to the linear one in the fast tier (test_eval_protocols.py).
@pytest.mark.parametrize(
    ("name", "height", "width"),
    [("alexnet", 287, 319), pytest.param("vgg11", 256, 256, marks=pytest.mark.slow)],
)
def test_dense_logits_are_the_mean_of_the_head_over_the_windows(
    name: str, height: int, width: int
) -> None:
    net = quick_backbone(name, 5).eval()
    kernel = net.avgpool.output_size
    kernel = kernel if isinstance(kernel, int) else kernel[0]
    images = torch.randn(1, 3, height, width)
    with torch.no_grad():
        features = net.features(images)
        rows, cols = features.shape[-2] - kernel + 1, features.shape[-1] - kernel + 1
        assert rows >= 2 and cols >= 2  # a 2x2 (or larger) class score map
        windows = [
            net.classifier(features[:, :, i : i + kernel, j : j + kernel].flatten(1))
            for i in range(rows)
            for j in range(cols)
        ]
        expected = torch.stack(windows).mean(dim=0)
        dense = dense_logits(net, images)
        torch.testing.assert_close(dense, expected, rtol=1e-4, atol=1e-4)
        if name != "alexnet":  # the averaging over mirror views is the same for every network
            return
        # the protocol: softmax of each view's averaged map, averaged over the mirror views
        views = torch.stack((images, images.flip(-1)), dim=1)  # (1, 2, C, H, W)
        mirrored = dense_logits(net, images.flip(-1))
        probs = (expected.softmax(-1) + mirrored.softmax(-1)) / 2
        torch.testing.assert_close(
            protocol_logits([views], net, net), probs.log(), rtol=1e-4, atol=1e-4
        )
