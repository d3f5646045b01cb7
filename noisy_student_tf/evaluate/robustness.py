"""Robustness metrics as pure numpy functions: ImageNet-C corruption error (CE, mCE, relative mCE),
ImageNet-P flip probability and mean flip rate (mFR), ImageNet-A top-1 over its 200 classes.

Every constant names its source; the facts were collected in shared/references/robustness.md.
Errors and flip probabilities are fractions in [0, 1]; the summary numbers (CE, mCE, FR, mFR) are
percentages, as papers print them (AlexNet itself scores 100).
"""

from typing import Mapping, Optional, Sequence

import numpy as np

# The 15 ImageNet-C benchmark corruptions in the standard order (Hendrycks & Dietterich, ICLR 2019,
# arXiv:1903.12261; same list in hendrycks/robustness ImageNet-C/test.py, google-research/augmix
# imagenet.py CORRUPTIONS and TFDS imagenet2012_corrupted.py BENCHMARK_CORRUPTIONS).
IMAGENET_C_CORRUPTIONS = (
    'gaussian_noise', 'shot_noise', 'impulse_noise',
    'defocus_blur', 'glass_blur', 'motion_blur', 'zoom_blur',
    'snow', 'frost', 'fog', 'brightness',
    'contrast', 'elastic_transform', 'pixelate', 'jpeg_compression')
# The 4 held-out "validation" corruptions; never part of mCE (TFDS EXTRA_CORRUPTIONS order).
IMAGENET_C_EXTRA_CORRUPTIONS = ('gaussian_blur', 'saturate', 'spatter', 'speckle_noise')
SEVERITIES = (1, 2, 3, 4, 5)

# AlexNet top-1 error per corruption, averaged over the 5 severities: the CE normaliser.
# Source: google-research/augmix imagenet.py ALEXNET_ERR (commit 202cf4c8), "Raw AlexNet errors
# taken from https://github.com/hendrycks/robustness"; agrees with arXiv:1903.12261 App. D to 1 dp.
ALEXNET_ERR = dict(zip(IMAGENET_C_CORRUPTIONS, (
    0.886428, 0.894468, 0.922640, 0.819880, 0.826268, 0.785948, 0.798360,
    0.866816, 0.826572, 0.819324, 0.564592, 0.853204, 0.646056, 0.717840,
    0.606500)))
# AlexNet clean top-1 error: google-research/robustness_metrics reports/imagenet_variants.py
# ALEXNET_AVERAGE_ERR_CLEAN (commit 10975b83); arXiv:1903.12261 Table 2 prints 43.5.
ALEXNET_CLEAN_ERR = 0.4348

# The 10 ImageNet-P perturbations that make up mFR (arXiv:1903.12261 App. E, Tables 3-4 order).
IMAGENET_P_PERTURBATIONS = (
    'gaussian_noise', 'shot_noise', 'motion_blur', 'zoom_blur', 'snow', 'brightness',
    'translate', 'rotate', 'tilt', 'scale')
IMAGENET_P_EXTRA_PERTURBATIONS = ('speckle_noise', 'gaussian_blur', 'spatter', 'shear')
# AlexNet flip probability per perturbation (difficulty 1), as a fraction: the FR normaliser.
# Source: the paper draft's Appendix E (hendrycks/robustness new_draft.pdf at commit de7653a);
# the final paper's values could not be checked (references/robustness.md §2.2 caveats).
ALEXNET_FP = {
    'gaussian_noise': 0.2365, 'shot_noise': 0.3006, 'motion_blur': 0.0930, 'zoom_blur': 0.0594,
    'snow': 0.1193, 'brightness': 0.0489, 'translate': 0.1101, 'rotate': 0.1310,
    'tilt': 0.0705, 'scale': 0.2353,
    'speckle_noise': 0.1865, 'gaussian_blur': 0.0278, 'spatter': 0.0505, 'shear': 0.1066}

# The 200 ImageNet-A classes as indices into the 1000 ImageNet-1k classes, in ImageNet-A class
# order (= sorted wnids). Source: hendrycks/natural-adv-examples eval.py indices_in_1k (HEAD
# 0777070); identical to timm imagenet_a_indices.txt and robustness_metrics _IMAGENET_A_LABELSET.
IMAGENET_A_INDICES = (
    6, 11, 13, 15, 17, 22, 23, 27, 30, 37, 39, 42, 47, 50, 57, 70, 71, 76, 79, 89, 90, 94,
    96, 97, 99, 105, 107, 108, 110, 113, 124, 125, 130, 132, 143, 144, 150, 151, 207, 234,
    235, 254, 277, 283, 287, 291, 295, 298, 301, 306, 307, 308, 309, 310, 311, 313, 314,
    315, 317, 319, 323, 324, 326, 327, 330, 334, 335, 336, 347, 361, 363, 372, 378, 386,
    397, 400, 401, 402, 404, 407, 411, 416, 417, 420, 425, 428, 430, 437, 438, 445, 456,
    457, 461, 462, 470, 472, 483, 486, 488, 492, 496, 514, 516, 528, 530, 539, 542, 543,
    549, 552, 557, 561, 562, 569, 572, 573, 575, 579, 589, 606, 607, 609, 614, 626, 627,
    640, 641, 642, 643, 658, 668, 677, 682, 684, 687, 701, 704, 719, 736, 746, 749, 752,
    758, 763, 765, 768, 773, 774, 776, 779, 780, 786, 792, 797, 802, 803, 804, 813, 815,
    820, 823, 831, 833, 835, 839, 845, 847, 850, 859, 862, 870, 879, 880, 888, 890, 897,
    900, 907, 913, 924, 932, 933, 934, 937, 943, 945, 947, 951, 954, 956, 957, 959, 971,
    972, 980, 981, 984, 986, 987, 988)


def top1_error(logits, labels):
  """Fraction of rows whose argmax differs from the label. logits [N, C], labels [N] ints."""
  logits = np.asarray(logits)
  labels = np.asarray(labels)
  if logits.ndim != 2 or labels.shape != (logits.shape[0],):
    raise ValueError(f'expected logits [N, C] and labels [N], got {logits.shape} and {labels.shape}')
  if not len(labels):
    raise ValueError('top1_error needs at least one example')
  return float(np.mean(np.argmax(logits, axis=1) != labels))


def _mean_error(errors):
  """Mean over severities; `errors` is one float or a sequence (one per severity)."""
  values = np.atleast_1d(np.asarray(errors, dtype=np.float64))
  if not values.size:
    raise ValueError('no errors given for a corruption')
  return float(values.mean())


def corruption_errors(errors: Mapping[str, Sequence[float]],
                      reference: Optional[Mapping[str, object]] = None):
  """CE per corruption, in percent: 100 * mean_s E[c][s] / mean_s E_ref[c][s].

  errors: corruption -> top-1 errors at each severity (fractions). reference: corruption -> the
  normaliser's error(s), a mean or a per-severity list (default: AlexNet, ALEXNET_ERR).
  With 5 severities this is the paper's sum-over-severities ratio (arXiv:1903.12261 §4.1).
  Returns {corruption: CE}. Raises ValueError for a corruption the reference lacks.
  """
  reference = ALEXNET_ERR if reference is None else reference
  out = {}
  for name, errs in errors.items():
    if name not in reference:
      raise ValueError(f'no reference error for corruption {name!r}; reference has '
                       f'{sorted(reference)}')
    ref = _mean_error(reference[name])
    if ref <= 0:
      raise ValueError(f'reference error for {name!r} is {ref}; it must be > 0')
    out[name] = 100.0 * _mean_error(errs) / ref
  return out


def mean_corruption_error(errors: Mapping[str, Sequence[float]],
                          reference: Optional[Mapping[str, object]] = None,
                          corruptions: Optional[Sequence[str]] = IMAGENET_C_CORRUPTIONS):
  """mCE in percent: the mean of corruption_errors over `corruptions` (default: the 15 benchmark
  corruptions; all must be present in `errors`). corruptions=None averages over every key of
  `errors` (used for a baseline-normalised mean on any subset). Returns a float."""
  names = list(errors) if corruptions is None else list(corruptions)
  missing = [c for c in names if c not in errors]
  if missing:
    raise ValueError(f'mCE needs errors for {missing}; got {sorted(errors)}')
  ces = corruption_errors({c: errors[c] for c in names}, reference)
  return float(np.mean([ces[c] for c in names]))


def relative_corruption_errors(errors: Mapping[str, Sequence[float]], clean_error: float,
                               reference: Optional[Mapping[str, object]] = None,
                               reference_clean_error: Optional[float] = None):
  """Relative CE per corruption, in percent:
  100 * (mean_s E[c][s] - E_clean) / (mean_s E_ref[c][s] - E_ref_clean).

  The clean error is subtracted at every severity (robustness_metrics imagenet_variants.py; checked
  against arXiv:1903.12261 Table 2 in references/robustness.md §1.3). Default reference: AlexNet
  (ALEXNET_ERR, ALEXNET_CLEAN_ERR). Returns {corruption: relative CE}.
  """
  if reference is None:
    reference = ALEXNET_ERR
    reference_clean_error = ALEXNET_CLEAN_ERR if reference_clean_error is None else (
        reference_clean_error)
  if reference_clean_error is None:
    raise ValueError('relative CE against a custom reference needs reference_clean_error')
  out = {}
  for name, errs in errors.items():
    if name not in reference:
      raise ValueError(f'no reference error for corruption {name!r}; reference has '
                       f'{sorted(reference)}')
    denom = _mean_error(reference[name]) - reference_clean_error
    if denom == 0:
      raise ValueError(f'reference error for {name!r} equals its clean error; relative CE '
                       'is undefined')
    out[name] = 100.0 * (_mean_error(errs) - clean_error) / denom
  return out


def relative_mean_corruption_error(errors, clean_error, reference=None, reference_clean_error=None,
                                   corruptions=IMAGENET_C_CORRUPTIONS):
  """Relative mCE in percent: the mean of relative_corruption_errors over `corruptions` (default
  the 15 benchmark ones; None = every key of `errors`). Returns a float."""
  names = list(errors) if corruptions is None else list(corruptions)
  missing = [c for c in names if c not in errors]
  if missing:
    raise ValueError(f'relative mCE needs errors for {missing}; got {sorted(errors)}')
  rel = relative_corruption_errors({c: errors[c] for c in names}, clean_error, reference,
                                   reference_clean_error)
  return float(np.mean([rel[c] for c in names]))


def is_noise_perturbation(name):
  """True for ImageNet-P sequences whose frames are independent noise draws of the first frame
  (hendrycks/robustness ImageNet-P/test.py: `'noise' in perturbation`)."""
  return 'noise' in name


def flip_probability(predictions, noise: bool):
  """ImageNet-P flip probability (difficulty 1) of top-1 predictions.

  predictions: int array [m, n] (m sequences of n frames) or a list of 1-D arrays (sequences of
  any length >= 2). noise=True compares every frame j > 1 with the first frame; False compares
  consecutive frames (arXiv:1903.12261 §4.2). Returns the mean over sequences of each sequence's
  flip fraction (as ImageNet-P/test.py flip_prob), a fraction in [0, 1].
  """
  per_sequence = []
  for seq in predictions:
    seq = np.asarray(seq).reshape(-1)
    if seq.size < 2:
      raise ValueError(f'a perturbation sequence needs at least 2 frames, got {seq.size}')
    previous = seq[0] if noise else seq[:-1]
    per_sequence.append(np.mean(seq[1:] != previous))
  if not per_sequence:
    raise ValueError('flip_probability needs at least one sequence')
  return float(np.mean(per_sequence))


def flip_rates(flip_probabilities: Mapping[str, float],
               reference: Optional[Mapping[str, float]] = None):
  """FR per perturbation in percent: 100 * FP[p] / FP_ref[p] (default reference ALEXNET_FP)."""
  reference = ALEXNET_FP if reference is None else reference
  out = {}
  for name, fp in flip_probabilities.items():
    if name not in reference:
      raise ValueError(f'no reference flip probability for {name!r}; reference has '
                       f'{sorted(reference)}')
    out[name] = 100.0 * float(fp) / float(reference[name])
  return out


def mean_flip_rate(flip_probabilities: Mapping[str, float], reference=None,
                   perturbations: Optional[Sequence[str]] = IMAGENET_P_PERTURBATIONS):
  """mFR in percent: the mean of flip_rates over `perturbations` (default the 10 of the paper;
  None = every key given). Returns a float."""
  names = list(flip_probabilities) if perturbations is None else list(perturbations)
  missing = [p for p in names if p not in flip_probabilities]
  if missing:
    raise ValueError(f'mFR needs flip probabilities for {missing}; got '
                     f'{sorted(flip_probabilities)}')
  frs = flip_rates({p: flip_probabilities[p] for p in names}, reference)
  return float(np.mean([frs[p] for p in names]))


def imagenet_a_predictions(logits):
  """Top-1 ImageNet-A class (0..199) of 1000-way ImageNet logits [N, 1000]: argmax over the 200
  IMAGENET_A_INDICES columns only (natural-adv-examples eval.py protocol)."""
  logits = np.asarray(logits)
  if logits.ndim != 2 or logits.shape[1] != 1000:
    raise ValueError(f'ImageNet-A needs 1000-way ImageNet logits [N, 1000], got {logits.shape}')
  return np.argmax(logits[:, list(IMAGENET_A_INDICES)], axis=1)


def imagenet_a_labels(labels_1k):
  """Maps ImageNet-1k label indices (as TFDS imagenet_a stores them) to ImageNet-A classes 0..199;
  raises ValueError naming any label outside the 200 classes."""
  lookup = {k: a for a, k in enumerate(IMAGENET_A_INDICES)}
  labels_1k = np.asarray(labels_1k).reshape(-1)
  bad = sorted({int(l) for l in labels_1k if int(l) not in lookup})
  if bad:
    raise ValueError(f'labels {bad[:10]} are not among the 200 ImageNet-A classes')
  return np.array([lookup[int(l)] for l in labels_1k], dtype=np.int64)


def imagenet_a_accuracy(logits, labels, label_space='1k'):
  """ImageNet-A top-1 accuracy (a fraction) with predictions restricted to the 200 classes.

  logits: [N, 1000]. labels: ImageNet-1k indices (label_space='1k', TFDS imagenet_a) or ImageNet-A
  classes 0..199 (label_space='200', the released folder of 200 sorted wnid folders).
  """
  if label_space == '1k':
    labels = imagenet_a_labels(labels)
  elif label_space == '200':
    labels = np.asarray(labels).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= 200):
      raise ValueError(f'ImageNet-A class labels must be in [0, 200), got {labels.min()}..'
                       f'{labels.max()}')
  else:
    raise ValueError(f"label_space must be '1k' or '200', got {label_space!r}")
  preds = imagenet_a_predictions(logits)
  if preds.shape != labels.shape or not labels.size:
    raise ValueError(f'{preds.shape[0]} predictions for {labels.shape[0]} labels')
  return float(np.mean(preds == labels))
