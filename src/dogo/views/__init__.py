"""Batched, per-image random augmentation for SSL views (SimCLR and SimSiam recipes).

A recipe turns a batch of uint8 images ``B x C x H x W`` (``C`` in {1, 3}) into float32 views
``B x 3 x S x S``, normalised, with every image drawing its own parameters from the
``torch.Generator`` passed in. The operations follow the reference (docs/reference.md §2), i.e.
torchvision's ``RandomResizedCrop -> RandomHorizontalFlip -> RandomApply(ColorJitter, 0.8) ->
RandomGrayscale [-> RandomGrayscale] [-> GaussianBlur at 224 px] -> ToTensor -> Normalize``::

    recipe = make_recipe("simclr", image_size=32)
    g = torch.Generator().manual_seed(0)
    view_a, view_b = recipe(images, g), recipe(images, g)  # two views, different parameters

Everything is tensor arithmetic over the whole batch (a handful of small per-batch loops, no
per-image Python), so it runs on whatever device the images are on. All random numbers come
from the generator (drawn on the generator's device, normally the CPU, then moved to the
images' device), so the same seed gives the same parameters on CPU and GPU.

How each operation is done (``p`` = pixel values in [0, 1], float32 throughout):

- **RandomResizedCrop + flip.** Crop boxes are sampled as torchvision does (10 attempts of
  area ~ U(scale) * H * W and log-ratio ~ U(log ratio), rounded; the first attempt that fits wins;
  otherwise the centre crop of the clamped ratio), all images and attempts at once. The crop is
  resampled *separably* with per-image ``S x H`` and ``S x W`` weight matrices (two batched
  matmuls): bilinear (triangle) weights at half-pixel centres, widened by the scale factor when
  shrinking and renormalised inside the crop box. That is exactly torchvision's
  ``resized_crop(..., antialias=True)`` / PIL's bilinear resize of the cropped region (no
  bleeding of pixels outside the box, proper antialiasing when downscaling), which
  ``grid_sample`` would not give. The flip reverses the rows of the width matrix, and the
  1/255 scaling is folded into the height matrix, both for free.
- **ColorJitter** (torchvision semantics): brightness/contrast/saturation factors
  ~ U(max(0, 1 - x), 1 + x), hue shift ~ U(-h, h); the four ops run in a random order per image
  (a per-image permutation; applied in four rounds, each round doing, per image, the op that
  image drew for that round); the whole jitter is applied with probability ``jitter_p``.
  Brightness ``clamp(f p)``, contrast ``clamp(f p + (1 - f) mean(gray))``, saturation
  ``clamp(f p + (1 - f) gray)`` are per-image 3x3 colour matrices, so a round of them is one
  batched ``baddbmm`` plus a clamp; hue goes RGB -> HSV -> (h + shift) mod 1 -> RGB (the
  closed-form HSV -> RGB: ``v - v s clamp(min(k, 4 - k), 0, 1)``, ``k = (n + 6h) mod 6``).
  Differences from the reference: the reference jitters PIL images, which quantises to uint8
  after every op and rounds the contrast mean to an integer; dogo stays in float.
- **RandomGrayscale**: ITU-R 601-2 luma ``0.299 R + 0.587 G + 0.114 B`` (what PIL's ``"L"``
  conversion, the reference's path, uses; torchvision's tensor path uses 0.2989), replicated to
  three channels. The same luma is used for contrast and saturation. SimSiam's two
  ``RandomGrayscale(0.2)`` are kept as two independent draws (``grayscale_p=(0.2, 0.2)``:
  grey if either hits, effective p = 0.36; greyscale twice equals greyscale once).
- **Gaussian blur** (only at 224 px, as the reference): per-image sigma ~ U(0.1, 2), applied
  with p = 0.5, separable grouped convolution with per-image kernels of SimCLR's size (10 % of
  the image, made odd: 23 at 224) and reflect padding. The reference uses PIL's GaussianBlur
  (an extended-box approximation of the same Gaussian). Blur and normalisation commute (the
  kernel sums to 1), so blur runs on the normalised tensor.
- **Greyscale inputs** (C = 1) stay one channel until the normalisation (saturation, hue and
  greyscale are no-ops on grey pixels), which makes them about 3x cheaper; the output is the
  same as for the image repeated to three channels (to float rounding).

Why our own and not a library (the project rule): torchvision is not a dependency of dogo (it
pins torch), and kornia (pure PyTorch, the same ops batched) took 2 to 6 times as long on the
same inputs (the README's Performance section has the measurement). Four views per image cost
well under 1 % of a CPU training step. ``tests/test_views.py`` checks every op against a slow
per-image reference written from torchvision's formulas, and against kornia's functional ops
where kornia is installed.

The package, one idea per module: :mod:`~dogo.views.crop` (RandomResizedCrop + flip),
:mod:`~dogo.views.color` (ColorJitter, RandomGrayscale), :mod:`~dogo.views.filters` (Gaussian blur,
solarization), :mod:`~dogo.views.evaluation` (normalisation statistics and the evaluation view) and
:mod:`~dogo.views.recipe` (:class:`ViewRecipe`, the named recipes, :func:`make_recipe`) and
:mod:`~dogo.views.multicrop` (:class:`ViewGroup`: an objective's views in groups of one size,
two views or DINO's multi-crop).
"""

from __future__ import annotations

from dogo.views.color import (
    LUMA,
    _color_jitter,  # noqa: F401 - internals the tests check directly
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    rgb_to_grayscale,
)
from dogo.views.crop import _crop_boxes_from_uniforms, resized_crop, sample_crop_boxes  # noqa: F401 - as above
from dogo.views.evaluation import eval_transform, normalization_for
from dogo.views.filters import blur_kernel_size, gaussian_blur, solarize
from dogo.views.multicrop import ViewGroup, draw_groups, encode_groups, pair_of_views
from dogo.views.recipe import RECIPES, ViewParams, ViewRecipe, make_recipe

__all__ = [
    "LUMA",
    "RECIPES",
    "ViewGroup",
    "ViewParams",
    "ViewRecipe",
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "blur_kernel_size",
    "draw_groups",
    "encode_groups",
    "eval_transform",
    "gaussian_blur",
    "make_recipe",
    "normalization_for",
    "pair_of_views",
    "resized_crop",
    "rgb_to_grayscale",
    "sample_crop_boxes",
    "solarize",
]
