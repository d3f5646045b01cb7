"""Matches a checkpoint's variables to a model's weights before any tensor is read.

Every model weight must find its variable (and its EMA shadow when shadows are used) with the
right shape and dtype; every checkpoint variable must be used or be a known bystander: the step
counter, optimizer slots and accumulators, or EMA shadows the caller chose not to use.  Anything
else fails with an error naming the variable.
"""

import dataclasses
import re
from typing import Dict, Tuple

import numpy as np

from noisy_student_tf.convert.names import EMA_SUFFIX, WeightName
from noisy_student_tf.convert.reader import CheckpointError

WEIGHT_SOURCES = ('ema', 'raw')
# Slots TF1 optimizers hang under a variable: RMSProp, RMSProp_1, Momentum, Adam, Adam_1, ...
_SLOT_RE = re.compile(r'^(RMSProp|Momentum|Adam|AdamW|Adagrad|Adadelta|Ftrl|LARS|Nadam|'
                      r'ExponentialMovingAverage/(RMSProp|Momentum))(_\d+)?$')
# Optimizer and training bookkeeping outside the model scope.
_BOOKKEEPING_RE = re.compile(r'^(.*/)?(global_step|beta[12]_power(_\d+)?|learning_rate|'
                             r'current_loss_scale|good_steps)$')


@dataclasses.dataclass(frozen=True)
class Plan:
  """What to read for each weight.

  primary: {keras path: checkpoint name} for the weights the model dir serves (final/ema).
  raw: {keras path: checkpoint name} for final/raw (the raw training values).
  primary_source: 'ExponentialMovingAverage' or 'raw'.
  ignored: {checkpoint name: reason} for every checkpoint variable not read.
  """
  primary: Dict[str, str]
  raw: Dict[str, str]
  primary_source: str
  ignored: Dict[str, str]
  num_values: int

  def ignored_summary(self):
    """Returns {reason: count} of the ignored variables."""
    out = {}
    for reason in self.ignored.values():
      out[reason] = out.get(reason, 0) + 1
    return out


def make_plan(shapes, dtypes, layout: Tuple[WeightName, ...], weights='ema') -> Plan:
  """Matches the checkpoint's variables (`shapes`, `dtypes`: {name: ...}) to `layout`.

  weights: 'ema' uses the `/ExponentialMovingAverage` shadows as the served weights when the
    checkpoint has them (all of them: a partial set fails), the raw values otherwise; 'raw' serves
    the raw values and reports the shadows as ignored.
  Returns a Plan.  Raises CheckpointError naming the first missing variable, wrong shape or dtype,
  or the unknown variables.
  """
  if weights not in WEIGHT_SOURCES:
    raise ValueError(f'weights must be one of {WEIGHT_SOURCES}, got {weights!r}')
  for w in layout:
    _check(w.official_name, w.shape, shapes, dtypes, 'model')
  shadows = [w.official_name + EMA_SUFFIX for w in layout]
  present = [s for s in shadows if s in shapes]
  use_shadows = weights == 'ema' and bool(present)
  if use_shadows and len(present) != len(shadows):
    missing = next(s for s in shadows if s not in shapes)
    raise CheckpointError(
        f'missing EMA shadow {missing!r}: the checkpoint has {len(present)} of {len(shadows)} '
        'shadows; convert with weights=raw to use the raw values')
  for w, s in zip(layout, shadows):
    if s in shapes:
      _check(s, w.shape, shapes, dtypes, 'EMA shadow')
  raw = {w.keras_path: w.official_name for w in layout}
  primary = ({w.keras_path: s for w, s in zip(layout, shadows)} if use_shadows else dict(raw))
  used = set(raw.values()) | set(primary.values())
  model_names = set(raw.values())
  ignored, unknown = {}, []
  for name in sorted(shapes):
    if name in used:
      continue
    reason = _why_ignored(name, model_names)
    if reason is None:
      unknown.append(name)
    else:
      ignored[name] = reason
  if unknown:
    more = f' and {len(unknown) - 5} more' if len(unknown) > 5 else ''
    raise CheckpointError(
        f'unknown variable {unknown[0]!r} in the checkpoint: not a weight of the model, an EMA '
        f'shadow, an optimizer slot or global_step (unknown: {unknown[:5]}{more})')
  num_values = sum(int(np.prod(w.shape)) for w in layout)
  return Plan(primary=primary, raw=raw,
              primary_source='ExponentialMovingAverage' if use_shadows else 'raw',
              ignored=ignored, num_values=num_values)


def _check(name, shape, shapes, dtypes, what):
  if name not in shapes:
    raise CheckpointError(f'missing variable {name!r} ({what} weight of shape {list(shape)})')
  if tuple(shapes[name]) != tuple(shape):
    raise CheckpointError(f'variable {name!r} has shape {list(shapes[name])}, the model needs '
                          f'{list(shape)}')
  if dtypes[name] != np.float32:
    raise CheckpointError(f'variable {name!r} has dtype {dtypes[name]}, expected float32')


def _why_ignored(name, model_names):
  if name.endswith(EMA_SUFFIX) and name[:-len(EMA_SUFFIX)] in model_names:
    return 'EMA shadow not used (raw weights requested)'
  if _BOOKKEEPING_RE.match(name):
    return 'training bookkeeping (global_step, optimizer scalars)'
  head = name.rpartition('/')[0]
  for base in (head, head.rpartition('/')[0]):
    rest = name[len(base) + 1:]
    if base in model_names and _SLOT_RE.match(rest):
      return 'optimizer slot'
  return None
