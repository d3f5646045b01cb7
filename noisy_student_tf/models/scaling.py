"""Compound scaling: the named EfficientNet variants and the rules that grow B0 into them.

EfficientNet (Tan & Le, 2019) scales depth by alpha**phi, width by beta**phi and resolution by
gamma**phi with alpha=1.2, beta=1.1, gamma=1.15.  The published variants (B1..B7, and the Noisy
Student L2) use hand-rounded rows instead of the exact powers; both are offered here.
"""

import dataclasses
import math

ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15
BASE_RESOLUTION = 224


@dataclasses.dataclass(frozen=True)
class ScalingRow:
  """One named variant: width and depth multipliers, input resolution, final dropout rate."""
  width: float
  depth: float
  resolution: int
  dropout: float


# Rows of the official `efficientnet_params` table (EfficientNet and Noisy Student code).
NAMED_VARIANTS = {
    'efficientnet-b0': ScalingRow(1.0, 1.0, 224, 0.2),
    'efficientnet-b1': ScalingRow(1.0, 1.1, 240, 0.2),
    'efficientnet-b2': ScalingRow(1.1, 1.2, 260, 0.3),
    'efficientnet-b3': ScalingRow(1.2, 1.4, 300, 0.3),
    'efficientnet-b4': ScalingRow(1.4, 1.8, 380, 0.4),
    'efficientnet-b5': ScalingRow(1.6, 2.2, 456, 0.4),
    'efficientnet-b6': ScalingRow(1.8, 2.6, 528, 0.5),
    'efficientnet-b7': ScalingRow(2.0, 3.1, 600, 0.5),
    'efficientnet-b8': ScalingRow(2.2, 3.6, 672, 0.5),
    'efficientnet-l2': ScalingRow(4.3, 5.3, 800, 0.5),
    # The L2 as Noisy Student trains it, before FixRes fine-tuning at 800 px.
    'efficientnet-l2-475': ScalingRow(4.3, 5.3, 475, 0.5),
}


def canonical_name(name):
  """Returns the full variant name for `name` ('b0', 'B3', 'l2-475' or 'efficientnet-b0').

  Raises ValueError naming the bad value and the allowed names when the name is unknown.
  """
  if not isinstance(name, str):
    raise ValueError(f'model name must be a string, got {name!r}')
  key = name.strip().lower()
  if not key.startswith('efficientnet-'):
    key = 'efficientnet-' + key
  if key not in NAMED_VARIANTS:
    raise ValueError(f'unknown model name {name!r}; expected one of {sorted(NAMED_VARIANTS)} '
                     '(or the short form such as "b0")')
  return key


def compound_row(phi, alpha=ALPHA, beta=BETA, gamma=GAMMA, base_resolution=BASE_RESOLUTION,
                 dropout=0.2):
  """Returns the ScalingRow for compound coefficient `phi`: depth alpha**phi, width beta**phi,
  resolution gamma**phi * base_resolution (rounded to a multiple of 8 pixels).

  Raises ValueError when phi < 0 or a coefficient is not positive.
  """
  for label, value in (('alpha', alpha), ('beta', beta), ('gamma', gamma)):
    if not value > 0:
      raise ValueError(f'{label} must be > 0, got {value!r}')
  if not phi >= 0:
    raise ValueError(f'phi must be >= 0, got {phi!r}')
  resolution = int(round(base_resolution * gamma**phi / 8.0)) * 8
  return ScalingRow(width=beta**phi, depth=alpha**phi, resolution=resolution, dropout=dropout)


def round_filters(filters, width, divisor=8):
  """Returns `filters * width` rounded to a multiple of `divisor`, never more than 10% below."""
  scaled = filters * width
  rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
  if rounded < 0.9 * scaled:
    rounded += divisor
  return int(rounded)


def round_repeats(repeats, depth):
  """Returns the number of blocks of a stage after depth scaling (always rounded up)."""
  return int(math.ceil(depth * repeats))
