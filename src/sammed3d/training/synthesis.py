"""Unlimited synthetic training crops: random label ensembles rendered as images.

The approach of SynthSeg (Billot et al., 2023) and of "randomized synthesis" (anatomix,
Dey et al., 2024), for the promptable task "segment the object under the click":

1. **Labels.** A crop is partitioned into random regions: a few smooth background "tissues"
   (the argmax of smooth noise fields), then objects drawn on top in random order: deformed
   ellipsoids, irregular blobs, tubes (random walks with varying radius, some branching),
   sheets (ellipsoidal shells) and, when a shape bank is given, real anatomical shapes (atlas
   regions) under random affine transforms. Optionally an "outside" region of intensity 0
   (air around a body, MR background). A smooth elastic deformation warps everything.
2. **Intensities.** Every label gets a random mean and spread (a Gaussian mixture with random
   parameters, so contrasts are arbitrary), a smooth texture, partial-volume blur,
   resolution loss along one axis, a multiplicative bias field, a gamma change and noise.
   CT-like crops keep negative values (excluded from the z-score as at inference).
3. **Target.** A voxel near the crop centre (where the first click puts the ROI at inference)
   picks a label; the target is that label's connected component through the voxel. It must
   be big enough and have visible contrast to its surroundings on most of its border, so
   the objective is always "the connected structure with real contrast under the click";
   nested or invisible targets are never asked for.

Everything is torch and runs on the device given (CPU in DataLoader workers, or a GPU so a GPU
is not starved by CPU data generation). A crop is a pure function of its seed.

Example:
    >>> gen = SyntheticGenerator(SynthesisConfig(size=128))
    >>> image, label = gen.sample(seed=7)          # (128,)*3 float32, (1, 128, 128, 128) bool
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SynthesisConfig:
    """Parameters of the generator (ranges are inclusive ``(low, high)``).

    Sizes are in voxels of the model input (1.5 mm each).
    """

    size: int = 128
    #: Smooth background "tissues" that partition the crop.
    background_labels: tuple[int, int] = (2, 5)
    #: Objects drawn on top.
    objects: tuple[int, int] = (8, 24)
    #: Relative frequencies of the object kinds.
    p_ellipsoid: float = 0.3
    p_blob: float = 0.25
    p_tube: float = 0.2
    p_shell: float = 0.1
    p_bank: float = 0.15
    #: Object radius range (log-uniform).
    radius: tuple[float, float] = (3.0, 28.0)
    #: Probability of an intensity-0 outside region.
    p_outside: float = 0.3
    #: Probability of a global elastic deformation, and its amplitude in voxels.
    p_elastic: float = 0.6
    elastic_amplitude: float = 6.0
    #: Per-label intensity spread (std, in units of the [0, 1] mean range).
    label_std: tuple[float, float] = (0.0, 0.06)
    #: Gaussian blur sigma (voxels), resolution-loss probability and factor.
    blur: tuple[float, float] = (0.0, 1.2)
    p_thick_slices: float = 0.25
    thick_factor: tuple[int, int] = (2, 5)
    #: Bias field strength (std of the log field), gamma log-std, noise std.
    bias: float = 0.35
    gamma: float = 0.3
    noise: tuple[float, float] = (0.0, 0.05)
    #: Probability of a CT-like crop (values <= 0 present and excluded from the z-score).
    p_ct_like: float = 0.3
    #: Target requirements.
    min_target_voxels: int = 80
    #: Minimum mean-intensity difference to a neighbouring label for a border to count as
    #: visible, and the largest fraction of the border allowed to be invisible.
    min_contrast: float = 0.08
    max_invisible_border: float = 0.2
    #: Standard deviation (voxels) of the target-picking point around the crop centre, and
    #: the probability of picking it uniformly in the central half instead.
    center_sigma: float = 10.0
    p_uniform_pick: float = 0.2
    #: Probability that the target is a drawn object rather than the region under a point
    #: near the centre (which is often a large background "tissue").
    p_object_target: float = 0.7
    #: Probability that a target is united with the touching part of its most common
    #: neighbour label (a structure of two parts with different intensities).
    p_union: float = 0.15


class ShapeBank:
    """Binary shapes (e.g. atlas regions at 1.5 mm) used as object templates.

    Args:
        shapes: ``(X, Y, Z)`` boolean arrays, each cropped to its bounding box.
    """

    def __init__(self, shapes: Sequence[np.ndarray]) -> None:
        kept = [np.asarray(s, dtype=bool) for s in shapes if np.asarray(s).any()]
        if not kept:
            raise ValueError("a shape bank needs at least one non-empty shape")
        self.shapes = [torch.from_numpy(_crop_to_bbox(s).astype(np.float32)) for s in kept]

    def __len__(self) -> int:
        return len(self.shapes)

    @classmethod
    def from_label_maps(
        cls, label_maps: Sequence[np.ndarray], min_voxels: int = 50, max_extent: int = 100
    ) -> ShapeBank:
        """Every label value of every map (after largest-connected-component) as a shape."""
        import cc3d

        shapes = []
        for lab in label_maps:
            lab = np.asarray(lab)
            for value in np.unique(lab):
                if value == 0:
                    continue
                mask = lab == value
                if mask.sum() < min_voxels:
                    continue
                largest = cc3d.largest_k(mask, k=1, connectivity=6) > 0
                cropped = _crop_to_bbox(largest)
                if largest.sum() >= min_voxels and max(cropped.shape) <= max_extent:
                    shapes.append(cropped)
        return cls(shapes)


def _crop_to_bbox(mask: np.ndarray) -> np.ndarray:
    idx = np.argwhere(mask)
    lo, hi = idx.min(0), idx.max(0) + 1
    return mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]


#: Where a structure crop of an :class:`Anatomy` may be centred (``structure_clicks``).
STRUCTURE_CLICKS = ("any", "innermost")


class Anatomy:
    """A real volume (1.5 mm, canonical) with a tissue map (for ``sample_anatomy``).

    Args:
        image: ``(X, Y, Z)`` intensities.
        tissue: ``(X, Y, Z)`` labels (0 outside the brain; e.g. 1 CSF, 2 GM, 3 WM).
        p_lesion: Probability that a crop gets a synthetic lesion as its first target.
        structures: Optional ``(X, Y, Z)`` uint8 bit map of named structures (bit ``i`` set
            where structure ``i`` is; they may nest, e.g. whole brain, white matter,
            lateral ventricles).
        structure_names: Optional names of the structures, one per bit (then every named bit
            must be set somewhere and no other bit may be).
        p_structure: Probability that a crop is centred in one of ``structures`` (drawn
            uniformly) and has it as its first target instead of a lesion.
        structure_clicks: Where a structure crop is centred (its first click): ``"any"``
            voxel of the structure, or only where it is the ``"innermost"`` structure, i.e.
            the structure with the fewest voxels among those set there. With nested
            structures (whole brain > white matter) ``"innermost"`` gives one meaning to a
            click: a click in the white matter means the white matter, a click in the brain
            outside it the whole brain (``"any"`` asks for both from a white-matter click).

    Raises:
        ValueError: arrays of different shapes or not 3-D; an empty tissue map; a structure
            bit that is set nowhere (or set without a name, given ``structure_names``), or,
            with ``"innermost"``, nowhere outside smaller structures; ``p_structure``
            outside [0, 1] or > 0 without structures; an unknown ``structure_clicks``.
    """

    def __init__(
        self,
        image: np.ndarray,
        tissue: np.ndarray,
        p_lesion: float = 0.6,
        structures: np.ndarray | None = None,
        p_structure: float = 0.0,
        structure_names: Sequence[str] | None = None,
        structure_clicks: str = "any",
    ) -> None:
        if structure_clicks not in STRUCTURE_CLICKS:
            raise ValueError(
                f"structure_clicks must be one of {', '.join(STRUCTURE_CLICKS)}, "
                f"got {structure_clicks!r}"
            )
        if image.shape != tissue.shape or image.ndim != 3:
            raise ValueError(
                f"image and tissue must be 3-D of one shape, got {image.shape} and {tissue.shape}"
            )
        self.image = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        self.tissue = torch.from_numpy(np.ascontiguousarray(tissue, dtype=np.int64))
        self.brain_voxels = np.argwhere(tissue > 0).astype(np.float64)
        if not len(self.brain_voxels):
            raise ValueError("the tissue map is empty")
        self.p_lesion = float(p_lesion)
        if not 0.0 <= p_structure <= 1.0:
            raise ValueError(f"p_structure must be in [0, 1], got {p_structure}")
        if p_structure > 0 and structures is None:
            raise ValueError("p_structure > 0 needs a structures map")
        self.p_structure = float(p_structure)
        self.structures: torch.Tensor | None = None
        #: Voxels of each structure (``(N_i, 3)``), where a structure crop is centred.
        self.structure_voxels: list[np.ndarray] = []
        if structures is not None:
            if structures.shape != image.shape:
                raise ValueError(
                    f"structures must have the image's shape {image.shape}, got {structures.shape}"
                )
            bits = np.ascontiguousarray(structures, dtype=np.uint8)
            top = int(bits.max()).bit_length()
            if structure_names is not None:
                if top > len(structure_names):
                    raise ValueError(
                        f"structure bit {top - 1} is set but only {len(structure_names)} "
                        f"structures are named ({', '.join(structure_names)})"
                    )
                top = len(structure_names)
            masks = [(bits & (1 << bit)) > 0 for bit in range(top)]
            for bit, mask in enumerate(masks):
                if not mask.any():
                    raise ValueError(
                        f"structure bit {bit}{_name(structure_names, bit)} is set nowhere in "
                        "the structures map"
                    )
            sites = masks
            if structure_clicks == "innermost":
                sites = _innermost_sites(masks)
                for bit, site in enumerate(sites):
                    if not site.any():
                        raise ValueError(
                            f"structure bit {bit}{_name(structure_names, bit)} lies entirely "
                            "inside smaller structures: no voxel to click for it"
                        )
            self.structure_voxels = [np.argwhere(site).astype(np.float64) for site in sites]
            self.structures = torch.from_numpy(bits.astype(np.int64))

    @classmethod
    def load(
        cls, path: str | Path, p_structure: float = 0.0, structure_clicks: str = "any"
    ) -> Anatomy:
        """Read an ``.npz`` with ``image`` and ``tissue`` arrays (and optionally
        ``structures``, see the class).

        Raises:
            ValueError: as the class; ``p_structure > 0`` for a file without ``structures``
                (built before they existed: rebuild it with ``tools/build_demo_data.py``).
        """
        with np.load(path) as data:
            structures = data["structures"] if "structures" in data.files else None
            if p_structure > 0 and structures is None:
                raise ValueError(
                    f"{path} has no 'structures' map (needed for a structure fraction > 0); "
                    "rebuild it with tools/build_demo_data.py"
                )
            names = (
                [str(n) for n in data["structure_names"]]
                if "structure_names" in data.files
                else None
            )
            image, tissue = data["image"], data["tissue"]
        return cls(
            image,
            tissue,
            structures=structures,
            p_structure=p_structure,
            structure_names=names,
            structure_clicks=structure_clicks,
        )


def _name(names: Sequence[str] | None, bit: int) -> str:
    return f" ({names[bit]})" if names is not None and bit < len(names) else ""


def _innermost_sites(masks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per structure, the voxels where no structure with fewer voxels is set."""
    sizes = [int(m.sum()) for m in masks]
    order = sorted(range(len(masks)), key=lambda b: sizes[b])
    taken = np.zeros(masks[0].shape, dtype=bool)
    sites: list[np.ndarray] = [np.zeros(0, dtype=bool)] * len(masks)
    for bit in order:  # smallest first: each keeps what no smaller structure took
        sites[bit] = masks[bit] & ~taken
        taken |= masks[bit]
    return sites


class SyntheticGenerator:
    """Draws ``(image, label)`` crops (see the module docstring).

    Args:
        config: Generator parameters.
        device: Where to compute.
        shape_bank: Optional anatomical shape templates.
    """

    def __init__(
        self,
        config: SynthesisConfig | None = None,
        device: str | torch.device = "cpu",
        shape_bank: ShapeBank | None = None,
    ) -> None:
        self.cfg = config or SynthesisConfig()
        self.device = torch.device(device)
        self.bank = shape_bank
        s = self.cfg.size
        axis = torch.arange(s, device=self.device, dtype=torch.float32)
        self._axis = axis

    def _vec(self, values: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values, dtype=np.float32), device=self.device)

    # -------------------------------------------------------------------------------- public

    def sample(self, seed: int, targets: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """One crop: normalised image ``(S, S, S)`` float32 and ``targets`` distinct targets
        ``(targets, S, S, S)`` bool (a target is repeated if the crop has too few).

        The image is z-scored over its voxels > 0 (the published normalisation).
        """
        image, label = self.sample_raw(seed, targets)
        return zscore_positive(image), label

    def sample_raw(self, seed: int, targets: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`sample` before the z-score (what a scanner would give: to write to disk)."""
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFFFFFF, 0x5EED])
        gen = torch.Generator(device=self.device)
        gen.manual_seed(int(rng.integers(2**62)))
        for _attempt in range(8):
            labels, n_labels = self._label_map(rng, gen)
            means = self._label_means(rng, n_labels, labels)
            objects = range(self._first_object, n_labels)
            components = label_components(labels)
            found: list[torch.Tensor] = []
            for _ in range(3 * targets):
                target = self._pick_target(rng, labels, components, means, objects)
                if target is None:
                    break
                if not any(bool((target & other).any()) for other in found):
                    found.append(target)
                if len(found) == targets:
                    break
            if found:
                image = self._render(rng, gen, labels, means)
                while len(found) < targets:
                    found.append(found[len(found) % max(1, len(found))])
                return image, torch.stack(found)
        # every attempt failed (very unlikely): a plain bright ellipsoid in noise
        labels = torch.zeros((self.cfg.size,) * 3, dtype=torch.int64, device=self.device)
        centre = np.full(3, self.cfg.size / 2.0)
        labels[self._ellipsoid(rng, gen, centre, np.full(3, 12.0), deform=0.0)] = 1
        means = torch.tensor([0.2, 0.8], device=self.device)
        image = self._render(rng, gen, labels, means)
        return image, (labels == 1)[None].expand(targets, -1, -1, -1).clone()

    # -------------------------------------------------------------------------------- labels

    def _smooth_noise(
        self,
        gen: torch.Generator,
        low: int,
        channels: int = 1,
        shape: tuple[int, int, int] | None = None,
    ) -> torch.Tensor:
        """``(channels, *shape)`` smooth noise (default shape ``S^3``), ~unit std, from a
        random grid with ``low`` nodes per ``S`` voxels."""
        s = self.cfg.size
        shape = shape or (s, s, s)
        nodes = [max(2, int(math.ceil(low * n / s)) + 1) for n in shape]
        coarse = torch.randn((1, channels, *nodes), generator=gen, device=self.device)
        return F.interpolate(coarse, size=shape, mode="trilinear", align_corners=True)[0]

    @staticmethod
    def _shape_of(box: tuple[slice, slice, slice]) -> tuple[int, int, int]:
        return (box[0].stop - box[0].start, box[1].stop - box[1].start, box[2].stop - box[2].start)

    def _label_map(
        self, rng: np.random.Generator, gen: torch.Generator
    ) -> tuple[torch.Tensor, int]:
        """Random label map ``(S, S, S)`` int64 (0 = outside) and the number of labels.

        Labels ``1..k`` are background tissues, ``k+1..`` drawn objects
        (``self._first_object`` records ``k + 1``).
        """
        cfg = self.cfg
        s = cfg.size
        k = int(rng.integers(cfg.background_labels[0], cfg.background_labels[1] + 1))
        fields = self._smooth_noise(gen, int(rng.integers(3, 7)), channels=k)
        self._first_object = k + 1
        labels = torch.ones(fields.shape[1:], dtype=torch.int64, device=self.device)
        best = fields[0]
        for c in range(1, k):  # argmax, cheaper as a loop of comparisons on CPU
            better = fields[c] > best
            labels[better] = c + 1
            best = torch.maximum(best, fields[c])
        next_label = k + 1
        if rng.random() < cfg.p_outside:
            outside = self._smooth_noise(gen, 3)[0] + float(rng.uniform(-2.2, -1.2))
            # keep the crop centre inside the "body"
            labels[outside > 0] = 0
        kinds = np.array([cfg.p_ellipsoid, cfg.p_blob, cfg.p_tube, cfg.p_shell, cfg.p_bank])
        if self.bank is None:
            kinds[4] = 0.0
        kinds = kinds / kinds.sum()
        n_obj = int(rng.integers(cfg.objects[0], cfg.objects[1] + 1))
        for _ in range(n_obj):
            kind = int(rng.choice(5, p=kinds))
            centre = self._object_centre(rng)
            r_lo, r_hi = cfg.radius
            radius = math.exp(rng.uniform(math.log(r_lo), math.log(r_hi)))
            if kind == 0:
                radii = radius * np.exp(rng.uniform(-0.5, 0.5, 3))
                mask = self._ellipsoid(rng, gen, centre, radii, deform=rng.uniform(0.0, 0.3))
            elif kind == 1:
                radii = radius * np.exp(rng.uniform(-0.3, 0.3, 3))
                mask = self._ellipsoid(rng, gen, centre, radii, deform=rng.uniform(0.4, 1.0))
            elif kind == 2:
                mask = self._tube(rng, centre, radius)
            elif kind == 3:
                radii = max(radius, 8.0) * np.exp(rng.uniform(-0.4, 0.4, 3))
                mask = self._shell(rng, gen, centre, radii, thickness=rng.uniform(1.0, 3.5))
            else:
                mask = self._bank_shape(rng, centre)
            if mask is not None and bool(mask.any()):
                labels[mask] = next_label
                next_label += 1
        if rng.random() < cfg.p_elastic:
            labels = self._elastic(rng, gen, labels)
        del s
        return labels, next_label

    def _object_centre(self, rng: np.random.Generator) -> np.ndarray:
        s = self.cfg.size
        if rng.random() < 0.5:  # objects near the centre, where targets are picked
            return np.clip(s / 2 + rng.normal(0.0, s / 6, 3), 0, s - 1)
        return rng.uniform(0, s - 1, 3)

    def _box(self, centre: np.ndarray, extent: float) -> tuple[slice, slice, slice] | None:
        s = self.cfg.size
        lo = np.maximum(np.floor(centre - extent), 0).astype(int)
        hi = np.minimum(np.ceil(centre + extent) + 1, s).astype(int)
        if np.any(hi <= lo):
            return None
        return (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))

    def _box_coords(self, box: tuple[slice, slice, slice]) -> torch.Tensor:
        """``(3, x, y, z)`` voxel coordinates of a box."""
        ax = [self._axis[b] for b in box]
        return torch.stack(torch.meshgrid(*ax, indexing="ij"))

    def _full_mask(self, box: tuple[slice, slice, slice], inside: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros((self.cfg.size,) * 3, dtype=torch.bool, device=self.device)
        mask[box] = inside
        return mask

    def _ellipsoid(
        self,
        rng: np.random.Generator,
        gen: torch.Generator,
        centre: np.ndarray,
        radii: np.ndarray,
        deform: float,
    ) -> torch.Tensor | None:
        box = self._box(centre, float(radii.max()) * (1.0 + deform) + 1)
        if box is None:
            return None
        rot = torch.from_numpy(_random_rotation(rng)).to(self.device)
        xyz = self._box_coords(box) - self._vec(centre).view(3, 1, 1, 1)
        u = torch.einsum("ij,jxyz->ixyz", rot, xyz)
        q = ((u / self._vec(radii).view(3, 1, 1, 1))
             ** 2).sum(0)  # fmt: skip
        if deform > 0:
            noise = self._smooth_noise(gen, int(rng.integers(4, 10)), shape=self._shape_of(box))[0]
            q = q.sqrt() + deform * 0.5 * noise
            return self._full_mask(box, q <= 1.0)
        return self._full_mask(box, q <= 1.0)

    def _shell(
        self,
        rng: np.random.Generator,
        gen: torch.Generator,
        centre: np.ndarray,
        radii: np.ndarray,
        thickness: float,
    ) -> torch.Tensor | None:
        box = self._box(centre, float(radii.max()) * 1.3 + thickness + 1)
        if box is None:
            return None
        rot = torch.from_numpy(_random_rotation(rng)).to(self.device)
        xyz = self._box_coords(box) - self._vec(centre).view(3, 1, 1, 1)
        u = torch.einsum("ij,jxyz->ixyz", rot, xyz)
        r = self._vec(radii).view(3, 1, 1, 1)
        q = ((u / r) ** 2).sum(0).sqrt()
        q = (
            q
            + 0.15 * self._smooth_noise(gen, int(rng.integers(4, 8)), shape=self._shape_of(box))[0]
        )
        inside = (q - 1.0).abs() * float(np.mean(radii)) <= thickness / 2
        if rng.random() < 0.5:  # an open sheet: cut the shell by a random plane
            normal = torch.from_numpy(_random_rotation(rng)[0]).to(self.device)
            inside &= (
                torch.einsum("i,ixyz->xyz", normal, u) > float(rng.uniform(-0.5, 0.5)) * r.mean()
            )
        return self._full_mask(box, inside)

    def _tube(self, rng: np.random.Generator, centre: np.ndarray, radius: float) -> torch.Tensor:
        """A tube along a random walk (radius varying along it, sometimes one branch),
        rasterised by stamping balls at points 0.5 voxel apart along the centre line."""
        r0 = float(np.clip(radius / 4.0, 0.8, 5.0))
        n_seg = int(rng.integers(8, 30))
        step = float(rng.uniform(3.0, 7.0))
        direction = _unit(rng.normal(size=3))
        pts, radii = [centre.astype(np.float64)], [r0]
        for _ in range(n_seg):
            direction = _unit(direction + rng.normal(0.0, 0.35, 3))
            pts.append(pts[-1] + step * direction)
            radii.append(float(np.clip(radii[-1] * np.exp(rng.normal(0, 0.1)), 0.7, 6.0)))
        paths = [(np.array(pts), np.array(radii))]
        if rng.random() < 0.4:  # one branch
            j = int(rng.integers(1, n_seg))
            d = _unit(rng.normal(size=3))
            bp, br = [pts[j]], [radii[j] * 0.7]
            for _ in range(int(rng.integers(4, 12))):
                d = _unit(d + rng.normal(0.0, 0.35, 3))
                bp.append(bp[-1] + step * d)
                br.append(br[-1])
            paths.append((np.array(bp), np.array(br)))
        centres, rads = [], []
        for p, r in paths:
            for a, b, ra, rb in zip(p[:-1], p[1:], r[:-1], r[1:], strict=True):
                n = max(2, int(np.ceil(np.linalg.norm(b - a) / 0.5)))
                t = np.linspace(0.0, 1.0, n)[:, None]
                centres.append(a + t * (b - a))
                rads.append(ra + t[:, 0] * (rb - ra))
        return self._stamp_balls(np.concatenate(centres), np.concatenate(rads))

    def _stamp_balls(self, centres: np.ndarray, radii: np.ndarray) -> torch.Tensor:
        """Mask of the union of balls ``|x - c_i| <= r_i`` (voxels)."""
        s = self.cfg.size
        mask = torch.zeros((s, s, s), dtype=torch.bool, device=self.device)
        rmax = int(np.ceil(radii.max()))
        o = torch.arange(-rmax, rmax + 1, device=self.device)
        offsets = torch.stack(torch.meshgrid(o, o, o, indexing="ij"), -1).reshape(-1, 3)  # (K, 3)
        c = self._vec(centres)  # (P, 3)
        base = torch.round(c).long()
        frac = c - base  # centre offset inside its voxel
        dist2 = ((offsets[None].float() - frac[:, None]) ** 2).sum(-1)  # (P, K)
        hit = dist2 <= self._vec(radii)[:, None] ** 2
        vox = (base[:, None, :] + offsets[None])[hit]  # (H, 3)
        ok = ((vox >= 0) & (vox < s)).all(-1)
        vox = vox[ok]
        mask[vox[:, 0], vox[:, 1], vox[:, 2]] = True
        return mask

    def _bank_shape(self, rng: np.random.Generator, centre: np.ndarray) -> torch.Tensor | None:
        assert self.bank is not None
        shape = self.bank.shapes[int(rng.integers(len(self.bank)))].to(self.device)
        scale = float(np.exp(rng.uniform(-0.4, 0.3)))
        extent = 0.5 * scale * math.sqrt(sum(float(d) ** 2 for d in shape.shape))
        box = self._box(centre, extent + 1)
        if box is None:
            return None
        rot = torch.from_numpy(_random_rotation(rng)).to(self.device)
        xyz = self._box_coords(box) - self._vec(centre).view(3, 1, 1, 1)
        # box voxel -> shape voxel: rotate, unscale, shift to the shape centre; then normalise
        u = torch.einsum("ij,jxyz->ixyz", rot, xyz) / scale
        dims = torch.tensor(shape.shape, device=self.device, dtype=torch.float32).view(3, 1, 1, 1)
        grid = (2 * (u + (dims - 1) / 2) + 1) / dims - 1  # align_corners=False
        grid = grid.flip(0).permute(1, 2, 3, 0)[None]  # grid_sample wants (x=W, y=H, z=D)
        vals = F.grid_sample(shape[None, None], grid, mode="bilinear", align_corners=False)
        return self._full_mask(box, vals[0, 0] > 0.5)

    def _elastic(
        self, rng: np.random.Generator, gen: torch.Generator, labels: torch.Tensor
    ) -> torch.Tensor:
        s = self.cfg.size
        amp = float(rng.uniform(0.0, self.cfg.elastic_amplitude)) * 2.0 / s
        disp = self._smooth_noise(gen, int(rng.integers(3, 7)), channels=3) * amp
        base = torch.linspace(-1 + 1 / s, 1 - 1 / s, s, device=self.device)
        grid = torch.stack(torch.meshgrid(base, base, base, indexing="ij"), dim=-1)
        grid = (grid + disp.permute(1, 2, 3, 0)).flip(-1)[None]
        warped = F.grid_sample(
            labels[None, None].float(),
            grid,
            mode="nearest",
            padding_mode="border",
            align_corners=False,
        )
        return warped[0, 0].round().long()

    # -------------------------------------------------------------------------------- target

    def _label_means(
        self, rng: np.random.Generator, n_labels: int, labels: torch.Tensor
    ) -> torch.Tensor:
        means = rng.uniform(0.05, 1.0, n_labels)
        means[0] = 0.0  # outside region (if any): intensity 0
        return torch.tensor(means, dtype=torch.float32, device=self.device)

    def _pick_target(
        self,
        rng: np.random.Generator,
        labels: torch.Tensor,
        components: torch.Tensor,
        means: torch.Tensor,
        objects: Sequence[int],
    ) -> torch.Tensor | None:
        """A visible connected target, or None after a few failed tries (``components``:
        :func:`label_components` of ``labels``).

        With probability ``p_object_target`` the target is a drawn object (a random voxel of
        a random object label), else the region under a point near the crop centre.
        """
        cfg = self.cfg
        s = cfg.size
        for _ in range(12):
            if objects and rng.random() < cfg.p_object_target:
                value = int(objects[int(rng.integers(len(objects)))])
                where = (labels == value).nonzero()
                if where.shape[0] < cfg.min_target_voxels:
                    continue
                i, j, k = (int(v) for v in where[int(rng.integers(where.shape[0]))])
            else:
                if rng.random() < cfg.p_uniform_pick:
                    p = rng.uniform(s / 4, 3 * s / 4, 3)
                else:
                    p = s / 2 + rng.normal(0.0, cfg.center_sigma, 3)
                i, j, k = np.clip(np.round(p), 0, s - 1).astype(int)
                value = int(labels[i, j, k])
            if value == 0:
                continue
            component = component_at(components, (i, j, k))
            if int(component.sum()) < cfg.min_target_voxels:
                continue
            if not self._visible(component, labels, means, [value]):
                continue
            if rng.random() < cfg.p_union:
                union = self._union_with_neighbour(component, labels, components, means, value)
                if union is not None:
                    return union
            return component
        return None

    def _visible(
        self,
        target: torch.Tensor,
        labels: torch.Tensor,
        means: torch.Tensor,
        values: Sequence[int],
    ) -> bool:
        """Whether most of the target's border has contrast: a border voxel counts as
        invisible when its label's mean is within ``min_contrast`` of a member label's mean."""
        box = _bbox(target, margin=1)
        sub = target[box]
        border = dilate(sub) & ~sub
        if not bool(border.any()):
            return False  # the whole crop: nothing to delineate
        outside = means[labels[box][border]]
        members = means[torch.as_tensor(list(values), device=means.device)]
        diff = (outside[:, None] - members[None]).abs().min(dim=1).values
        invisible = float((diff < self.cfg.min_contrast).float().mean())
        return invisible <= self.cfg.max_invisible_border

    def _union_with_neighbour(
        self,
        component: torch.Tensor,
        labels: torch.Tensor,
        components: torch.Tensor,
        means: torch.Tensor,
        value: int,
    ) -> torch.Tensor | None:
        """``component`` united with the touching component of its most common neighbour
        label (a structure made of two parts: several positive clicks are needed), if the
        union is visible."""
        box = _bbox(component, margin=1)
        sub = component[box]
        ring = dilate(sub) & ~sub
        around = labels[box][ring]
        around = around[(around != value) & (around != 0)]
        if around.numel() == 0:
            return None
        other = int(torch.mode(around).values)
        where = (ring & (labels[box] == other)).nonzero()[0]
        seed = tuple(int(where[a]) + box[a].start for a in range(3))
        part = component_at(components, seed)  # type: ignore[arg-type]
        union = component | part
        if not self._visible(union, labels, means, [value, other]):
            return None
        return union

    # -------------------------------------------------------------------------------- image

    def _render(
        self,
        rng: np.random.Generator,
        gen: torch.Generator,
        labels: torch.Tensor,
        means: torch.Tensor,
    ) -> torch.Tensor:
        """Raw image of a label map: per-label Gaussian mixture, texture, then :meth:`_degrade`."""
        cfg = self.cfg
        n = means.shape[0]
        stds = torch.tensor(rng.uniform(*cfg.label_std, n), dtype=torch.float32, device=self.device)
        stds[0] = 0.0
        texture = self._smooth_noise(gen, int(rng.integers(12, 40)))[0]
        image = means[labels] + stds[labels] * texture
        return self._degrade(rng, gen, image, labels == 0)

    def _degrade(
        self,
        rng: np.random.Generator,
        gen: torch.Generator,
        image: torch.Tensor,
        outside: torch.Tensor,
    ) -> torch.Tensor:
        """Scanner effects on an image in ~[0, 1]: partial-volume blur, thick slices, bias
        field, gamma, noise; CT-like crops are shifted so that part of them is <= 0."""
        cfg = self.cfg
        sigma = float(rng.uniform(*cfg.blur))
        if sigma > 0.3:
            image = gaussian_blur(image, sigma)
        if rng.random() < cfg.p_thick_slices:
            image = thick_slices(
                image, int(rng.integers(0, 3)), int(rng.integers(*cfg.thick_factor))
            )
        bias = torch.exp(
            self._smooth_noise(gen, int(rng.integers(2, 5)))[0] * cfg.bias * rng.random()
        )
        image = image.clamp(min=0) * bias
        image = image / image.max().clamp(min=1e-6)
        image = image ** float(np.exp(rng.normal(0.0, cfg.gamma)))
        noise_std = float(rng.uniform(*cfg.noise))
        image = image + noise_std * torch.randn(image.shape, generator=gen, device=self.device)
        if rng.random() < cfg.p_ct_like:
            image = image - float(rng.uniform(0.05, 0.4))  # values <= 0 leave the z-score
        else:
            image = image.clamp(min=0)
            image[outside] = image[outside].abs() * (rng.random() < 0.5)
        return image

    # -------------------------------------------------------------------------------- anatomy

    def sample_anatomy(
        self, anatomy: Anatomy, seed: int, targets: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A crop of real anatomy with a synthetic lesion and/or tissue targets.

        The crop (random centre in the brain, random rotation, scale 0.8-1.25 and flips) gets
        a random intensity remapping (sometimes non-monotonic: other MR contrasts) and the
        scanner effects of :meth:`_degrade`. Target 0 is a lesion placed in the brain with
        probability ``p_lesion`` (irregular blob, 25-80 % darker or brighter than its
        surroundings, soft edge); the others are connected tissue components (CSF, grey or
        white matter) under points near the centre. With probability ``p_structure`` of an
        anatomy with a structures map, the crop is instead centred on a random voxel of a
        random structure (no jitter) and target 0 is that structure's connected part through
        the crop centre (no lesion).

        Returns:
            z-scored image ``(S, S, S)`` and targets ``(targets, S, S, S)`` bool.
        """
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFFFFFF, 0xA7A7])
        gen = torch.Generator(device=self.device)
        gen.manual_seed(int(rng.integers(2**62)))
        found: list[torch.Tensor] = []
        if anatomy.p_structure > 0 and rng.random() < anatomy.p_structure:
            image, tissue, structure = self._structure_crop(anatomy, rng)
            if structure is not None:
                found.append(structure)
        else:
            image, tissue, _ = self._anatomy_crop(anatomy, rng)
        if not found and rng.random() < anatomy.p_lesion:
            image, lesion = self._add_lesion(rng, gen, image, tissue)
            if lesion is not None:
                found.append(lesion)
        image = self._remap_contrast(rng, image, tissue)
        s = self.cfg.size
        components = label_components(tissue)
        for _ in range(6 * targets):
            if len(found) >= targets:
                break
            p = np.clip(np.round(s / 2 + rng.normal(0.0, s / 6, 3)), 0, s - 1).astype(int)
            value = int(tissue[tuple(p)])
            if value == 0:
                continue
            comp = component_at(components, tuple(int(v) for v in p))
            if int(comp.sum()) < self.cfg.min_target_voxels:
                continue
            if rng.random() < self.cfg.p_union:  # e.g. grey + white matter
                tissue_means = torch.arange(int(tissue.max()) + 1, device=self.device).float()
                union = self._union_with_neighbour(comp, tissue, components, tissue_means, value)
                comp = comp if union is None else union
            if any(bool((comp & other).any()) for other in found):
                continue
            found.append(comp)
        image = self._degrade(rng, gen, image, image <= 0)
        if not found:  # no brain near the centre: fall back to a generated crop
            return self.sample(int(rng.integers(2**62)), targets)
        while len(found) < targets:
            found.append(found[0])
        return zscore_positive(image), torch.stack(found)

    def _structure_crop(
        self, anatomy: Anatomy, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """A crop centred on a random voxel of a random structure of ``anatomy``; the target
        is that structure's connected part through the crop centre (None if it is smaller
        than ``min_target_voxels``)."""
        assert anatomy.structures is not None
        bit = int(rng.integers(len(anatomy.structure_voxels)))
        voxels = anatomy.structure_voxels[bit]
        centre = voxels[int(rng.integers(len(voxels)))]
        image, tissue, bits = self._anatomy_crop(anatomy, rng, centre=centre, extra=True)
        assert bits is not None
        inside = (bits & (1 << bit)) > 0
        s = self.cfg.size
        mid = (s // 2,) * 3
        if not bool(inside[mid]):  # the centre fell between voxels: nearest inside voxel
            near = torch.nonzero(inside)
            if not len(near):
                return image, tissue, None
            offset = (near - torch.tensor(mid, device=near.device)).square().sum(1)
            mid = tuple(int(v) for v in near[int(offset.argmin())])
        target = connected_component_at(inside, mid)  # type: ignore[arg-type]
        if int(target.sum()) < self.cfg.min_target_voxels:
            return image, tissue, None
        return image, tissue, target

    def _anatomy_crop(
        self,
        anatomy: Anatomy,
        rng: np.random.Generator,
        centre: np.ndarray | None = None,
        extra: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Image, tissue and (with ``extra``) the structure bits resampled to a crop around
        ``centre`` (source voxels; default a random brain voxel plus N(0, 6) jitter)."""
        s = self.cfg.size
        vol = anatomy.image.to(self.device)
        lab = anatomy.tissue.to(self.device)
        if centre is None:
            brain = anatomy.brain_voxels
            centre = brain[int(rng.integers(len(brain)))] + rng.normal(0.0, 6.0, 3)
        rot = _random_rotation(rng) if rng.random() < 0.7 else np.eye(3, dtype=np.float32)
        scale = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
        flips = np.where(rng.random(3) < 0.5, -1.0, 1.0)
        matrix = (rot * flips[None, :]) / scale  # output offset -> source offset (voxels)
        offs = self._axis - (s - 1) / 2
        grid = torch.stack(torch.meshgrid(offs, offs, offs, indexing="ij")).reshape(3, -1)
        src = self._vec(matrix) @ grid + self._vec(centre)[:, None]  # (3, S^3) source voxels
        dims = self._vec(np.array(vol.shape, dtype=np.float32))[:, None]
        norm = (2 * src + 1) / dims - 1
        norm = norm.flip(0).t().reshape(1, s, s, s, 3)
        img = F.grid_sample(vol[None, None], norm, mode="bilinear", align_corners=False)[0, 0]
        tis = F.grid_sample(lab[None, None].float(), norm, mode="nearest", align_corners=False)
        if not extra or anatomy.structures is None:
            return img, tis[0, 0].round().long(), None
        bits = anatomy.structures.to(self.device)[None, None].float()
        bits = F.grid_sample(bits, norm, mode="nearest", align_corners=False)[0, 0]
        return img, tis[0, 0].round().long(), bits.round().long()

    def _add_lesion(
        self,
        rng: np.random.Generator,
        gen: torch.Generator,
        image: torch.Tensor,
        tissue: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        s = self.cfg.size
        inside = tissue > 0
        for _ in range(6):
            centre = np.clip(s / 2 + rng.normal(0.0, s / 8, 3), 8, s - 9)
            if not bool(inside[tuple(np.round(centre).astype(int))]):
                continue
            radius = float(np.exp(rng.uniform(np.log(2.0), np.log(15.0))))
            radii = radius * np.exp(rng.uniform(-0.3, 0.3, 3))
            mask = self._ellipsoid(rng, gen, centre, radii, deform=rng.uniform(0.2, 0.8))
            if mask is None:
                continue
            mask &= inside
            if int(mask.sum()) < self.cfg.min_target_voxels:
                continue
            box = _bbox(mask, margin=3)
            sub = mask[box]
            ring = dilate(sub, 2) & ~sub & inside[box]
            local = image[box][ring].mean() if bool(ring.any()) else image[mask].mean()
            factor = float(rng.uniform(0.25, 0.8)) * (1.0 if rng.random() < 0.5 else -1.0)
            weight = gaussian_blur(mask.float(), float(rng.uniform(0.5, 1.2)))
            texture = 1.0 + 0.08 * self._smooth_noise(gen, int(rng.integers(16, 40)))[0]
            lesion_value = (local * (1.0 + factor)).clamp(min=0) * texture
            image = image * (1 - weight) + weight * lesion_value
            return image, mask
        return image, None

    def _remap_contrast(
        self, rng: np.random.Generator, image: torch.Tensor, tissue: torch.Tensor
    ) -> torch.Tensor:
        """Scale to ~[0, 1] by the brain's 99th percentile; with probability 1/3 remap the
        intensities through a random piecewise-linear curve (other contrasts)."""
        brain = image[tissue > 0]
        top = (
            torch.quantile(brain[:: max(1, brain.numel() // 100000)], 0.99)
            if brain.numel()
            else image.max()
        )
        image = (image / top.clamp(min=1e-6)).clamp(0, 1.5)
        if rng.random() < 1 / 3:
            knots = torch.tensor(np.sort(rng.uniform(0, 1.5, 4)), device=self.device)
            xs = torch.cat(
                [
                    torch.zeros(1, device=self.device),
                    knots,
                    torch.full((1,), 1.5, device=self.device),
                ]
            )
            ys = torch.tensor(
                rng.uniform(0.05, 1.0, xs.numel()), device=self.device, dtype=torch.float32
            )
            ys[0] = 0.0  # air stays dark
            idx = torch.bucketize(image, xs.float()).clamp(1, xs.numel() - 1)
            x0, x1 = xs.float()[idx - 1], xs.float()[idx]
            y0, y1 = ys[idx - 1], ys[idx]
            image = y0 + (image - x0) / (x1 - x0).clamp(min=1e-6) * (y1 - y0)
        return image


# ------------------------------------------------------------------------------------ helpers


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3x3 rotation (QR of a Gaussian matrix), float32."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.astype(np.float32)


def _bbox(mask: torch.Tensor, margin: int = 0) -> tuple[slice, slice, slice]:
    """Bounding box of a non-empty ``(X, Y, Z)`` mask, grown by ``margin`` (clipped)."""
    idx = mask.nonzero()
    lo = (idx.min(0).values - margin).clamp(min=0).tolist()
    hi = (idx.max(0).values + 1 + margin).tolist()
    return tuple(slice(a, min(b, n)) for a, b, n in zip(lo, hi, mask.shape, strict=True))  # type: ignore[return-value]


def dilate(mask: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Binary dilation of a ``(X, Y, Z)`` mask with a ``(2r+1)^3`` cube."""
    k = 2 * radius + 1
    return F.max_pool3d(mask[None, None].float(), k, stride=1, padding=radius)[0, 0] > 0


def label_components(labels: torch.Tensor) -> torch.Tensor:
    """The 6-connected components of every label value of a label map, numbered.

    Args:
        labels: ``(X, Y, Z)`` integer (or bool) label map, values >= 0; 0 is background.

    Returns:
        ``(X, Y, Z)`` int32 component ids on ``labels``' device: 0 where ``labels == 0``;
        two voxels share an id exactly when they have the same non-zero label and a
        6-connected path inside that label joins them.

    One pass of ``cc3d`` on the CPU (a map on another device is copied there and back):
    flood fill by repeated dilation (how components were found on a GPU before) costs one
    convolution per voxel of path length: 88 on average and up to 323 per look-up over 40
    look-ups of the generator's crops (``benchmarks/bench_synthesis.py`` compares the two).
    """
    import cc3d

    arr = labels.detach().to(device="cpu", dtype=torch.int32).numpy()
    ids = cc3d.connected_components(arr, connectivity=6, out_dtype=np.uint32)
    return torch.from_numpy(ids.astype(np.int32)).to(labels.device)


def component_at(components: torch.Tensor, seed: tuple[int, int, int]) -> torch.Tensor:
    """The component of ``components`` (:func:`label_components`) through voxel ``seed``,
    as a bool mask (empty where the seed is background)."""
    cid = components[seed]
    if int(cid) == 0:
        return torch.zeros(components.shape, dtype=torch.bool, device=components.device)
    return components == cid


def connected_component_at(mask: torch.Tensor, seed: tuple[int, int, int]) -> torch.Tensor:
    """The 6-connected component of ``mask`` ``(X, Y, Z)`` bool through voxel ``seed``
    (empty if the seed is not in the mask), on ``mask``'s device."""
    return component_at(label_components(mask), seed)


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a ``(X, Y, Z)`` image (sigma in voxels, reflect padding)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, device=image.device, dtype=image.dtype)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    k = k / k.sum()
    out = image[None, None]
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = -1
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = radius
        out = F.conv3d(F.pad(out, pad, mode="replicate"), k.view(shape))
    return out[0, 0]


def thick_slices(image: torch.Tensor, axis: int, factor: int) -> torch.Tensor:
    """Simulate thick slices: average ``factor`` voxels along ``axis``, then interpolate back."""
    if factor < 2:
        return image
    x = image.movedim(axis, -1)[None]  # (1, A, B, N)
    n = x.shape[-1]
    pooled = F.avg_pool1d(x.reshape(1, -1, n), factor, stride=factor, ceil_mode=True)
    back = F.interpolate(pooled, size=n, mode="linear", align_corners=False)
    return back.reshape(x.shape)[0].movedim(-1, axis)


def zscore_positive(image: torch.Tensor) -> torch.Tensor:
    """Z-score with the mean and std of the voxels > 0 (torchio ``ZNormalization`` with
    ``masking_method=lambda x: x > 0``, the published pre-processing)."""
    values = image[image > 0]
    if values.numel() < 2:
        return image
    std = values.std()
    return (image - values.mean()) / std.clamp(min=1e-6)


__all__ = [
    "STRUCTURE_CLICKS",
    "Anatomy",
    "GeneratedDataset",
    "ShapeBank",
    "SynthesisConfig",
    "SyntheticGenerator",
    "component_at",
    "connected_component_at",
    "label_components",
    "dilate",
    "gaussian_blur",
    "load_shape_bank",
    "save_shape_bank",
    "thick_slices",
    "zscore_positive",
]


class GeneratedDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """``length`` generated crops per epoch, keyed like the real-data datasets.

    Sample ``(epoch, index)`` is a pure function of ``(seed, epoch, index)``, so runs resume
    exactly and every rank/worker agrees. Items are ``image`` ``(1, S, S, S)`` float32,
    ``label`` ``(K, S, S, S)`` float32 and ``seed`` (the click seed), as from
    :func:`sammed3d.training.data.finish_sample`. With ``defer=True`` the crop is not drawn:
    items carry ``synth_seed`` and ``source`` instead and :meth:`draw` makes the batch on the
    training device. A share ``anatomy_fraction`` of the crops comes from real anatomy
    (:meth:`SyntheticGenerator.sample_anatomy`), the rest from random label ensembles.

    Args:
        length: Crops per epoch.
        config: Generator parameters (``size`` = the model input).
        seed: Run seed.
        shape_bank: Optional ``.npz`` path of shape templates.
        defer: Leave generation to :meth:`draw` (GPU generation).
        targets: Targets per crop (``label`` has this many channels).
        anatomy: Optional ``.npz`` path of an :class:`Anatomy`.
        anatomy_fraction: Share of crops drawn from ``anatomy``.
        structure_fraction: Share of the anatomy crops whose first target is one of the
            anatomy's named structures (:class:`Anatomy` ``p_structure``).
        structure_clicks: Where those crops are centred (:class:`Anatomy`).
    """

    def __init__(
        self,
        length: int,
        config: SynthesisConfig,
        *,
        seed: int = 0,
        shape_bank: str | None = None,
        defer: bool = False,
        targets: int = 1,
        anatomy: str | None = None,
        anatomy_fraction: float = 0.0,
        structure_fraction: float = 0.0,
        structure_clicks: str = "any",
    ) -> None:
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        if anatomy_fraction > 0 and not anatomy:
            raise ValueError("anatomy_fraction > 0 needs an anatomy file")
        self.anatomy_path = anatomy
        self.anatomy_fraction = float(anatomy_fraction)
        self.structure_fraction = float(structure_fraction)
        self.structure_clicks = structure_clicks
        self._anatomy: Anatomy | None = None
        self.length = int(length)
        self.config = config
        self.seed = int(seed)
        self.shape_bank_path = shape_bank
        self.defer = bool(defer)
        self.targets = int(targets)
        self._generators: dict[str, SyntheticGenerator] = {}

    def __len__(self) -> int:
        return self.length

    def generator(self, device: str | torch.device = "cpu") -> SyntheticGenerator:
        """The (cached) generator for ``device``."""
        key = str(torch.device(device))
        if key not in self._generators:
            bank = load_shape_bank(self.shape_bank_path) if self.shape_bank_path else None
            self._generators[key] = SyntheticGenerator(self.config, device, bank)
        return self._generators[key]

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, torch.Tensor]:
        from sammed3d.training.data import sample_rng

        epoch, index = key if isinstance(key, tuple) else (0, int(key))
        rng = sample_rng(self.seed, epoch, index)
        synth_seed = int(rng.integers(2**62))
        click_seed = int(rng.integers(2**62))
        source = int(rng.random() < self.anatomy_fraction)  # 1: real anatomy
        item = {
            "seed": torch.tensor(click_seed, dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
        }
        if self.defer:
            item["synth_seed"] = torch.tensor(synth_seed, dtype=torch.int64)
            item["source"] = torch.tensor(source, dtype=torch.int64)
            return item
        if torch.utils.data.get_worker_info() is not None:
            torch.set_num_threads(1)
        image, label = self._one(synth_seed, source, "cpu")
        item["image"] = image[None].contiguous()
        item["label"] = label.float()
        return item

    def _one(
        self, synth_seed: int, source: int, device: str | torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        gen = self.generator(device)
        if source:
            if self._anatomy is None:
                assert self.anatomy_path is not None
                self._anatomy = Anatomy.load(
                    self.anatomy_path, self.structure_fraction, self.structure_clicks
                )
            return gen.sample_anatomy(self._anatomy, synth_seed, self.targets)
        return gen.sample(synth_seed, self.targets)

    def draw(
        self, synth_seeds: torch.Tensor, sources: torch.Tensor, device: str | torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Generate a deferred batch on ``device``: ``(B, 1, S, S, S)`` image, ``(B, K, S, S, S)``
        label."""
        pairs = [
            self._one(int(s), int(k), device)
            for s, k in zip(synth_seeds.tolist(), sources.tolist(), strict=True)
        ]
        image = torch.stack([p[0] for p in pairs])[:, None]
        label = torch.stack([p[1] for p in pairs]).float()
        return image, label


def load_shape_bank(path: str | Path) -> ShapeBank:
    """Read a shape bank written by :func:`save_shape_bank` (``.npz`` of packed masks)."""
    with np.load(path) as data:
        shapes = [
            np.unpackbits(data[f"shape_{i}"], count=int(np.prod(data[f"dims_{i}"])))
            .reshape(tuple(data[f"dims_{i}"]))
            .astype(bool)
            for i in range(int(data["count"]))
        ]
    return ShapeBank(shapes)


def save_shape_bank(bank: ShapeBank, path: str | Path) -> None:
    """Write a shape bank as one compressed ``.npz`` (bit-packed masks)."""
    arrays: dict[str, np.ndarray] = {"count": np.array(len(bank))}
    for i, shape in enumerate(bank.shapes):
        mask = shape.numpy() > 0.5
        arrays[f"shape_{i}"] = np.packbits(mask.ravel())
        arrays[f"dims_{i}"] = np.array(mask.shape)
    np.savez_compressed(path, **arrays)
