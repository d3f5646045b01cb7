"""noisy-student-tf: Noisy Student self-training (Xie et al., 2019) with EfficientNet in Keras 3."""

__version__ = '0.1.0'
