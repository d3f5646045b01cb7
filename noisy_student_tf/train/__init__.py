"""Training: the custom tf.distribute loop of ns-train (trainer.py), strategies, schedules and EMA."""

from noisy_student_tf.train.trainer import TrainConfig, train

__all__ = ['TrainConfig', 'train']
