"""Which EfficientNet a checkpoint holds: its variable scope, and the variant whose shapes fit."""

import re

from noisy_student_tf import models
from noisy_student_tf.convert.reader import CheckpointError

# `<optional outer scopes>/efficientnet-bX/{stem,blocks_N,head}/...`; the NS training graph puts a
# teacher under `teacher_model/`, so an outer prefix is allowed.
_SCOPE_RE = re.compile(r'^((?:[^/]+/)*?)(efficientnet-[^/]+)/(?:stem|blocks_\d+|head)/')
_BLOCK_RE = re.compile(r'/blocks_(\d+)/')


def find_scope(names):
  """Returns (scope, variant) for the one EfficientNet scope among the variable `names`, e.g.
  ('efficientnet-b0', 'efficientnet-b0') or ('teacher_model/efficientnet-b3', 'efficientnet-b3').

  Raises CheckpointError when no name or more than one scope looks like an EfficientNet.
  """
  scopes = {}
  for name in names:
    m = _SCOPE_RE.match(name)
    if m:
      scopes[m.group(1) + m.group(2)] = m.group(2)
  if len(scopes) != 1:
    found = sorted(scopes) if scopes else sorted(names)[:5]
    raise CheckpointError(
        ('no variable looks like an official EfficientNet weight '
         '(expected efficientnet-bX/{stem,blocks_N,head}/...); first names: ' if not scopes else
         'the checkpoint holds several EfficientNet scopes; expected one: ') + repr(found))
  (scope, variant), = scopes.items()
  return scope, variant


def _signature_of_checkpoint(shapes, scope):
  """(stem filters, number of blocks, head filters, classes) read from the checkpoint's shapes."""
  def shape(suffix):
    name = f'{scope}/{suffix}'
    if name not in shapes:
      raise CheckpointError(f'missing variable {name!r}: needed to identify the model')
    return shapes[name]
  blocks = {int(m.group(1)) for n in shapes if n.startswith(scope + '/')
            for m in [_BLOCK_RE.search(n[len(scope):])] if m}
  return (shape('stem/conv2d/kernel')[-1], len(blocks), shape('head/conv2d/kernel')[-1],
          shape('head/dense/kernel')[-1])


def _signature_of_config(config):
  arch = models.describe(config)
  return (arch.stem_filters, len(arch.blocks), arch.head_filters, config.num_classes)


def infer_config(shapes, *, model=None, resolution=None, path_hint='') -> models.EfficientNetConfig:
  """Returns the EfficientNetConfig a checkpoint holds.

  shapes: {variable name: shape} of the checkpoint.  model: a variant name to use instead of the
  inferred one (its shapes are still checked later, weight by weight).  resolution: the input size
  to record (default the variant's own).  path_hint: the checkpoint path; the official L2 tarballs
  share the scope 'efficientnet-l2', so a path containing 'l2_475' / 'l2-475' (or resolution=475)
  selects 'efficientnet-l2-475', otherwise 'efficientnet-l2' (800 px).
  Raises CheckpointError naming the variable or shapes that identify no variant.
  """
  scope, variant = find_scope(shapes)
  signature = _signature_of_checkpoint(shapes, scope)
  num_classes = signature[-1]
  if model is not None:
    name = models.canonical_name(model)
  else:
    candidates = [n for n in models.NAMED_VARIANTS if n != 'efficientnet-l2-475' and
                  _signature_of_config(models.make_config(n, num_classes)) == signature]
    if not candidates:
      raise CheckpointError(
          f'scope {scope!r} with stem {signature[0]} filters, {signature[1]} blocks and head '
          f'{signature[2]} filters matches no EfficientNet variant; pass the model name')
    name = variant if variant in candidates else candidates[0]
    if name == 'efficientnet-l2':
      hint = path_hint.lower()
      if resolution == 475 or 'l2_475' in hint or 'l2-475' in hint:
        name = 'efficientnet-l2-475'
  return models.make_config(name, num_classes, resolution=resolution)


def scope_of(shapes):
  """Returns the full scope (with any outer prefix) of the checkpoint's EfficientNet variables."""
  return find_scope(shapes)[0]
