"""The torch-free preprocessing and post-processing of predict.py on exported files equal the torchvision / torch
versions of the checkpoint path, bit for bit where the checkpoint path is deterministic."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from data.preprocessing import pad_to_batch as torch_pad
from data.transforms import classification_transforms, segmentation_transforms
from tasks.pictures import nearest_indices
from tasks.runtime.predict import resize_bilinear, softmax
from tasks.runtime.preprocess import classification_input, pad_to_batch, segmentation_input

SIZES = [(37, 53), (128, 96), (300, 200), (64, 64), (33, 200), (201, 31)]


@pytest.mark.parametrize("width,height", SIZES)
def test_eval_preprocessing_is_bit_identical(width, height):
    image = Image.fromarray(np.random.default_rng(width).integers(0, 256, (height, width, 3), dtype=np.uint8))
    for size, crop in [(32, 0.875), (64, 1.0), (224, 0.9)]:
        expected = classification_transforms(False, size, crop_pct=crop)(image).numpy()
        assert np.array_equal(classification_input(image, {"size": size, "crop_pct": crop}), expected)
    for eval_size in (None, 48, 100):
        expected = segmentation_transforms(False, None, eval_size=eval_size)(image).numpy()
        assert np.array_equal(segmentation_input(image, {"size": eval_size}), expected)


def test_padding_softmax_and_resizes_match_torch():
    rng = np.random.default_rng(0)
    images = [rng.random((3, h, w), dtype=np.float32) for h, w in [(40, 50), (64, 33)]]
    mean = (0.485, 0.456, 0.406)
    assert np.array_equal(pad_to_batch(images, 32, mean), torch_pad([torch.from_numpy(i) for i in images], 32,
                                                                      mean).numpy())
    logits = rng.normal(size=(2, 5, 7, 9)).astype(np.float32) * 4
    np.testing.assert_allclose(softmax(logits, 1), torch.from_numpy(logits).softmax(1).numpy(), atol=1e-6)
    probs = rng.random((4, 13, 17), dtype=np.float32)
    for size in [(29, 40), (13, 17), (7, 5)]:
        expected = F.interpolate(torch.from_numpy(probs)[None], size=size, mode="bilinear", align_corners=False)[0]
        np.testing.assert_allclose(resize_bilinear(probs, size), expected.numpy(), atol=1e-6)
        rows = nearest_indices(13, size[0])
        expected = F.interpolate(torch.arange(13.0).view(1, 1, 13, 1), size=(size[0], 1), mode="nearest").flatten()
        assert rows.tolist() == expected.long().tolist()
