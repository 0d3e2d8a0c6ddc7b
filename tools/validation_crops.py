"""The validation crops of the developer checks in tools/ (``check_first_click_selection.py``,
``check_click_chain.py``).

Generated crops (random label ensembles, seeds 40,000+) and the MNI152 training anatomy with new
targets (seeds 50,000+): never drawn by training (seeds from 0 per epoch) nor by the held-out
evaluation set (``tools/build_demo_data.py``). Each crop is centred on a uniform voxel of its
target, where the first click then goes, as the ROI is placed at inference.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from sammed3d.training.interaction import centre_on_first_click
from sammed3d.training.synthesis import Anatomy, SynthesisConfig, SyntheticGenerator

ANATOMY = "data/model/train/anatomy_mni152.npz"


def validation_crops(size: int, n: int) -> Iterator[tuple[int, str, torch.Tensor, np.ndarray]]:
    """``2n`` centred crops: ``(seed, source, image (1, 1, S, S, S), target (S, S, S) bool)``,
    ``source`` ``"generated"`` or ``"MNI152 anatomy"``, alternating."""
    gen = SyntheticGenerator(SynthesisConfig(size=size))
    anatomy = Anatomy.load(ANATOMY)
    for s in range(n):
        crops = {
            "generated": gen.sample(40_000 + s),
            "MNI152 anatomy": gen.sample_anatomy(anatomy, 50_000 + s),
        }
        for source, (image, label) in crops.items():
            lab = label.reshape(1, 1, *image.shape[-3:]).bool()
            seeds = torch.tensor([s])
            x, lab, _ = centre_on_first_click(image[None, None].float(), lab, seeds, 1.0)
            yield s, source, x, lab[0, 0].numpy()
