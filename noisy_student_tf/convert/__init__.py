"""Official TF1 EfficientNet / Noisy Student checkpoints <-> model dirs.

Public names:
  convert_checkpoint(checkpoint, model_dir, *, model=None, resolution=None, weights='ema',
                     class_names=None, overwrite=False) -> ConversionReport
  export_official(model_dir, prefix, *, scope=None, global_step=None, overwrite=False) -> dict
  official_layout(config, scope=None) -> (WeightName(keras_path, official_name, shape), ...)
  infer_config(shapes, *, model=None, resolution=None, path_hint='') -> EfficientNetConfig
  CheckpointIndex(path), CheckpointError, OFFICIAL_INPUT, imagenet_class_names(num_classes)
"""

from noisy_student_tf.convert.imagenet import imagenet_class_names, read_class_names
from noisy_student_tf.convert.infer import find_scope, infer_config
from noisy_student_tf.convert.names import EMA_SUFFIX, WeightName, official_layout, official_scope
from noisy_student_tf.convert.plan import Plan, make_plan
from noisy_student_tf.convert.reader import CheckpointError, CheckpointIndex, resolve_prefix
from noisy_student_tf.convert.to_model_dir import (OFFICIAL_INPUT, ConversionReport,
                                                   convert_checkpoint)
from noisy_student_tf.convert.to_official import export_official
from noisy_student_tf.convert.writer import write_checkpoint

__all__ = ['EMA_SUFFIX', 'OFFICIAL_INPUT', 'CheckpointError', 'CheckpointIndex',
           'ConversionReport', 'Plan', 'WeightName', 'convert_checkpoint', 'export_official',
           'find_scope', 'imagenet_class_names', 'infer_config', 'make_plan', 'official_layout',
           'official_scope', 'read_class_names', 'resolve_prefix', 'write_checkpoint']
