"""Name mapping between our Keras weights and the official TF1 EfficientNet checkpoint names.

The official code (tensorflow/tpu models/official/efficientnet, google-research/noisystudent)
names variables `efficientnet-bX/{stem,blocks_N,head}/<layer>/<weight>`, where TF1 `tf.layers`
number same-named layers in call order inside each scope: in a block with expansion the expand
conv is `conv2d` and the project conv `conv2d_1`, and the three batch norms are
`tpu_batch_normalization`, `_1`, `_2`; a block without expansion (stage 1) has one conv and one
batch norm fewer, so the project conv is `conv2d` and its batch norm `tpu_batch_normalization_1`.
SE convs live in their own `se/` scope.  See ../shared/references/checkpoints.md, section 2.
"""

import dataclasses
from typing import Tuple

from noisy_student_tf import models

EMA_SUFFIX = '/ExponentialMovingAverage'
BN_WEIGHTS = ('gamma', 'beta', 'moving_mean', 'moving_variance')


@dataclasses.dataclass(frozen=True)
class WeightName:
  """One weight: its Keras variable path, its official name (with scope) and its shape."""
  keras_path: str
  official_name: str
  shape: Tuple[int, ...]


def official_scope(config: models.EfficientNetConfig) -> str:
  """Returns the official top-level variable scope of `config`, e.g. 'efficientnet-b0'.

  Both L2 checkpoints (475 and 800 px) use 'efficientnet-l2': the official code has one L2 row.
  """
  return 'efficientnet-l2' if config.name == 'efficientnet-l2-475' else config.name


def _bn(keras_layer, official_layer, channels):
  return [(f'{keras_layer}/{w}', f'{official_layer}/{w}', (channels,)) for w in BN_WEIGHTS]


def official_layout(config: models.EfficientNetConfig, scope=None) -> Tuple[WeightName, ...]:
  """Returns every weight of the model `config` describes, in model order, with its official name.

  config: an EfficientNetConfig with include_top=True (the official checkpoints have the head).
  scope: the top-level scope of the official names (default `official_scope(config)`).
  Returns a tuple of WeightName; kernels are HWIO [kh, kw, in, out], depthwise [kh, kw, in, 1],
  dense [in, out], the layouts the official checkpoints and Keras share (no transposes needed).
  """
  if not config.include_top:
    raise ValueError('official_layout needs include_top=True: the official checkpoints hold the '
                     'classifier (head/dense)')
  arch = models.describe(config)
  scope = official_scope(config) if scope is None else scope
  rows = [('stem_conv/kernel', 'stem/conv2d/kernel', (3, 3, 3, arch.stem_filters))]
  rows += _bn('stem_bn', 'stem/tpu_batch_normalization', arch.stem_filters)
  for block in arch.blocks:
    k, p = block.name, f'blocks_{block.index}'
    mid = block.expanded_filters
    conv_no = bn_no = 0

    def conv_name():
      return f'{p}/conv2d' + (f'_{conv_no}' if conv_no else '')

    def bn_name():
      return f'{p}/tpu_batch_normalization' + (f'_{bn_no}' if bn_no else '')

    if block.expand_ratio != 1:
      rows.append((f'{k}_expand_conv/kernel', conv_name() + '/kernel',
                   (1, 1, block.filters_in, mid)))
      rows += _bn(f'{k}_expand_bn', bn_name(), mid)
      conv_no += 1
      bn_no += 1
    rows.append((f'{k}_dwconv/kernel', f'{p}/depthwise_conv2d/depthwise_kernel',
                 (block.kernel, block.kernel, mid, 1)))
    rows += _bn(f'{k}_bn', bn_name(), mid)
    bn_no += 1
    if block.se_filters:
      rows += [(f'{k}_se/reduce/kernel', f'{p}/se/conv2d/kernel', (1, 1, mid, block.se_filters)),
               (f'{k}_se/reduce/bias', f'{p}/se/conv2d/bias', (block.se_filters,)),
               (f'{k}_se/expand/kernel', f'{p}/se/conv2d_1/kernel', (1, 1, block.se_filters, mid)),
               (f'{k}_se/expand/bias', f'{p}/se/conv2d_1/bias', (mid,))]
    rows.append((f'{k}_project_conv/kernel', conv_name() + '/kernel',
                 (1, 1, mid, block.filters_out)))
    rows += _bn(f'{k}_project_bn', bn_name(), block.filters_out)
  last = arch.blocks[-1].filters_out
  rows.append(('top_conv/kernel', 'head/conv2d/kernel', (1, 1, last, arch.head_filters)))
  rows += _bn('top_bn', 'head/tpu_batch_normalization', arch.head_filters)
  rows += [('logits/kernel', 'head/dense/kernel', (arch.head_filters, config.num_classes)),
           ('logits/bias', 'head/dense/bias', (config.num_classes,))]
  return tuple(WeightName(kp, f'{scope}/{on}', tuple(shape)) for kp, on, shape in rows)
