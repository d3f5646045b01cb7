"""What an EfficientNet is, as data: the B0 stage table and its expansion into blocks.

`describe(config)` turns an `EfficientNetConfig` into a flat list of `BlockSpec`s plus stem and head
widths.  The Keras builder (`efficientnet.py`) and the profiler (`profile.py`) both read this list, so
the network is defined in exactly one place.
"""

import dataclasses
from typing import Tuple

from noisy_student_tf.models import scaling


@dataclasses.dataclass(frozen=True)
class StageArgs:
  """One row of the stage table: kernel, repeats, filters in/out, expansion, stride, SE ratio."""
  kernel: int
  repeats: int
  filters_in: int
  filters_out: int
  expand_ratio: int
  stride: int
  se_ratio: float = 0.25


# EfficientNet paper, Table 1 (MBConv1 k3x3 ... MBConv6 k3x3); stem 32, head 1280.
B0_STAGES: Tuple[StageArgs, ...] = (
    StageArgs(3, 1, 32, 16, 1, 1),
    StageArgs(3, 2, 16, 24, 6, 2),
    StageArgs(5, 2, 24, 40, 6, 2),
    StageArgs(3, 3, 40, 80, 6, 2),
    StageArgs(5, 3, 80, 112, 6, 1),
    StageArgs(5, 4, 112, 192, 6, 2),
    StageArgs(3, 1, 192, 320, 6, 1),
)
B0_STEM_FILTERS = 32
B0_HEAD_FILTERS = 1280
# Stages whose stride becomes 1 for 32x32 inputs (official SVHN/CIFAR recipe): stages 2 and 3.
SMALL_IMAGE_STRIDE1_STAGES = (1, 2)


@dataclasses.dataclass(frozen=True)
class EfficientNetConfig:
  """Everything that determines an EfficientNet's graph and noise.

  width/depth: multipliers on B0's filters and repeats; resolution: the input side in pixels;
  dropout: rate before the classifier; drop_path_rate: stochastic-depth drop rate of the last block
  (earlier blocks get linearly less); small_image: stride 1 in stages 2 and 3 for 32x32 inputs.
  """
  name: str = 'efficientnet-b0'
  width: float = 1.0
  depth: float = 1.0
  resolution: int = 224
  dropout: float = 0.2
  drop_path_rate: float = 0.2
  num_classes: int = 1000
  include_top: bool = True
  small_image: bool = False
  bn_momentum: float = 0.99
  bn_epsilon: float = 1e-3
  depth_divisor: int = 8
  stages: Tuple[StageArgs, ...] = B0_STAGES

  def to_json(self):
    """Returns a JSON-serialisable dict of the fields that differ from the table (no stages)."""
    d = dataclasses.asdict(self)
    d.pop('stages')
    return d


@dataclasses.dataclass(frozen=True)
class BlockSpec:
  """One MBConv block after scaling. `index` counts blocks over the whole net from 0."""
  name: str
  index: int
  kernel: int
  stride: int
  filters_in: int
  filters_out: int
  expand_ratio: int
  se_filters: int
  drop_path_rate: float

  @property
  def expanded_filters(self):
    return self.filters_in * self.expand_ratio

  @property
  def has_skip(self):
    return self.stride == 1 and self.filters_in == self.filters_out


@dataclasses.dataclass(frozen=True)
class Architecture:
  """The scaled network: stem width, blocks in order, head width, and the total stride."""
  stem_filters: int
  blocks: Tuple[BlockSpec, ...]
  head_filters: int
  total_stride: int
  config: EfficientNetConfig


def stage_strides(config):
  """Returns the stride of each stage's first block (small-image mode sets stages 2 and 3 to 1)."""
  strides = [s.stride for s in config.stages]
  if config.small_image:
    for i in SMALL_IMAGE_STRIDE1_STAGES:
      strides[i] = 1
  return strides


def validate(config):
  """Raises ValueError naming the bad field when `config` cannot describe a working network."""
  for field in ('width', 'depth'):
    value = getattr(config, field)
    if not (isinstance(value, (int, float)) and value > 0):
      raise ValueError(f'{field} must be a number > 0, got {value!r}')
  for field in ('dropout', 'drop_path_rate'):
    value = getattr(config, field)
    if not (isinstance(value, (int, float)) and 0 <= value < 1):
      raise ValueError(f'{field} must be in [0, 1), got {value!r}')
  if config.include_top and not (isinstance(config.num_classes, int) and config.num_classes >= 2):
    raise ValueError(f'num_classes must be an integer >= 2, got {config.num_classes!r}')
  total = 2 * _product(stage_strides(config))
  if not (isinstance(config.resolution, int) and config.resolution >= total):
    raise ValueError(
        f'resolution must be an integer >= {total} (the network\'s total stride'
        f'{" in small-image mode" if config.small_image else ""}), got {config.resolution!r}')


def _product(values):
  out = 1
  for v in values:
    out *= v
  return out


def describe(config: EfficientNetConfig) -> Architecture:
  """Expands `config` into an Architecture: every block with its scaled widths and drop rate.

  Drop-path rates rise linearly from 0 at the first block to `config.drop_path_rate` at the last,
  so the last block's survival probability is exactly 1 - rate (the paper's 0.8).  The official
  code stops one step short (rate * (N-1)/N); the difference is below 1% of the rate for B0.
  """
  validate(config)
  strides = stage_strides(config)
  round_f = lambda f: scaling.round_filters(f, config.width, config.depth_divisor)
  stages = []
  for stage, stride in zip(config.stages, strides):
    stages.append((stage, stride, scaling.round_repeats(stage.repeats, config.depth)))
  num_blocks = sum(r for _, _, r in stages)
  blocks = []
  index = 0
  for stage_no, (stage, stride, repeats) in enumerate(stages):
    filters_in, filters_out = round_f(stage.filters_in), round_f(stage.filters_out)
    for r in range(repeats):
      block_in = filters_in if r == 0 else filters_out
      rate = config.drop_path_rate * index / max(1, num_blocks - 1)
      blocks.append(BlockSpec(
          name=f'block{stage_no + 1}{_letters(r)}',
          index=index, kernel=stage.kernel, stride=stride if r == 0 else 1,
          filters_in=block_in, filters_out=filters_out, expand_ratio=stage.expand_ratio,
          se_filters=max(1, int(block_in * stage.se_ratio)) if stage.se_ratio else 0,
          drop_path_rate=rate))
      index += 1
  return Architecture(stem_filters=round_f(B0_STEM_FILTERS), blocks=tuple(blocks),
                      head_filters=round_f(B0_HEAD_FILTERS),
                      total_stride=2 * _product(strides), config=config)


def _letters(i):
  """0 -> 'a' ... 25 -> 'z', then 'a26', 'a27' ...: Keras-style block suffixes (L2 needs <= 22)."""
  return chr(ord('a') + i) if i < 26 else f'a{i}'


def make_config(name='efficientnet-b0', num_classes=1000, *, width=None, depth=None,
                resolution=None, dropout=None, drop_path_rate=None, include_top=True,
                small_image=False, phi=None, alpha=scaling.ALPHA, beta=scaling.BETA,
                gamma=scaling.GAMMA, bn_momentum=0.99, bn_epsilon=1e-3) -> EfficientNetConfig:
  """Returns the EfficientNetConfig of a named variant, with any overrides applied.

  name: 'efficientnet-b0'..'efficientnet-b8', 'efficientnet-l2', 'efficientnet-l2-475' (or 'b0').
  phi: if given, width/depth/resolution come from the compound rule alpha**phi, beta**phi,
    gamma**phi instead of the named row (explicit width/depth/resolution still win).
  Raises ValueError naming any bad value.
  """
  canonical = scaling.canonical_name(name)
  row = scaling.NAMED_VARIANTS[canonical]
  if phi is not None:
    row = scaling.compound_row(phi, alpha, beta, gamma, dropout=row.dropout)
  config = EfficientNetConfig(
      name=canonical,
      width=row.width if width is None else width,
      depth=row.depth if depth is None else depth,
      resolution=row.resolution if resolution is None else resolution,
      dropout=row.dropout if dropout is None else dropout,
      drop_path_rate=0.2 if drop_path_rate is None else drop_path_rate,
      num_classes=num_classes, include_top=include_top, small_image=small_image,
      bn_momentum=bn_momentum, bn_epsilon=bn_epsilon)
  validate(config)
  return config
