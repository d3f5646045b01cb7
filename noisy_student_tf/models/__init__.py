"""EfficientNet models for Noisy Student, in Keras 3 only (no TensorFlow import), so they run on
the TensorFlow, JAX and PyTorch backends.

Public names: build_model, build_from_config, make_config, describe, profile, EfficientNetConfig,
NAMED_VARIANTS.
"""

from noisy_student_tf.models.architecture import (Architecture, BlockSpec, EfficientNetConfig,
                                                  describe, make_config)
from noisy_student_tf.models.efficientnet import build_from_config, build_model
from noisy_student_tf.models.profile import Profile, profile
from noisy_student_tf.models.scaling import NAMED_VARIANTS, canonical_name, compound_row

__all__ = ['Architecture', 'BlockSpec', 'EfficientNetConfig', 'NAMED_VARIANTS', 'Profile',
           'build_from_config', 'build_model', 'canonical_name', 'compound_row', 'describe',
           'make_config', 'profile']
