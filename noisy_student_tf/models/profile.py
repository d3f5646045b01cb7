"""Parameter and FLOP counts computed from the architecture description, without building weights.

FLOPs are multiply-adds, as the EfficientNet paper counts them: convolutions, depthwise
convolutions, the SE 1x1 convolutions and the classifier.  Batch norm, activations, pooling and
element-wise products are not counted (they are a few percent at most).
"""

import dataclasses

from noisy_student_tf.models import architecture


@dataclasses.dataclass(frozen=True)
class Profile:
  """Counts for one model at one resolution."""
  params: int            # all weights, batch-norm moving statistics included
  trainable_params: int  # what keras reports as trainable
  flops: int             # multiply-adds for one image
  resolution: int


def _out_size(size, stride):
  return -(-size // stride)  # 'same' padding


def profile(config: architecture.EfficientNetConfig, resolution=None) -> Profile:
  """Returns parameter and multiply-add counts of `config` at `resolution` (default its own)."""
  arch = architecture.describe(config)
  res = config.resolution if resolution is None else int(resolution)
  trainable = non_trainable = flops = 0

  def conv(cin, cout, k, size_out, depthwise=False, bias=False):
    nonlocal trainable, flops
    weights = k * k * cin * (1 if depthwise else cout) + (cout if bias else 0)
    trainable += weights
    flops += size_out * size_out * k * k * cin * (1 if depthwise else cout)

  def bn(c):
    nonlocal trainable, non_trainable
    trainable += 2 * c
    non_trainable += 2 * c

  size = _out_size(res, 2)
  conv(3, arch.stem_filters, 3, size)
  bn(arch.stem_filters)
  for b in arch.blocks:
    mid = b.expanded_filters
    if b.expand_ratio != 1:
      conv(b.filters_in, mid, 1, size)
      bn(mid)
    size = _out_size(size, b.stride)
    conv(mid, mid, b.kernel, size, depthwise=True)
    bn(mid)
    if b.se_filters:
      conv(mid, b.se_filters, 1, 1, bias=True)
      conv(b.se_filters, mid, 1, 1, bias=True)
    conv(mid, b.filters_out, 1, size)
    bn(b.filters_out)
  conv(arch.blocks[-1].filters_out, arch.head_filters, 1, size)
  bn(arch.head_filters)
  if config.include_top:
    trainable += arch.head_filters * config.num_classes + config.num_classes
    flops += arch.head_filters * config.num_classes
  return Profile(params=trainable + non_trainable, trainable_params=trainable, flops=flops,
                 resolution=res)
