"""benchmarks/student_ablation.py: each variant changes exactly the choice it names."""

import importlib.util
import json
import os

import pytest

from noisy_student_tf.selftrain import label as label_lib
from noisy_student_tf.selftrain import pipeline
from noisy_student_tf.train import trainer

_PATH = os.path.join(os.path.dirname(__file__), '..', 'benchmarks', 'student_ablation.py')


@pytest.fixture(scope='module')
def ablation():
  spec = importlib.util.spec_from_file_location('student_ablation', _PATH)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


@pytest.fixture
def recipe(tmp_path):
  config = pipeline.PipelineConfig(
      work_dir=str(tmp_path), label=label_lib.LabelConfig(unlabeled='digits:test'),
      models=('b0',), widths=(0.25,), depths=(0.25,), student_init_from_teacher=True,
      teacher=trainer.TrainConfig(labeled='digits:train', eval_data='digits:test', resolution=32,
                                  small_image=True, train_steps=10, batch_size=16,
                                  unlabeled_ratio=3, base_learning_rate=0.2, warmup_epochs=2),
      student=dict(train_steps=10, dropout=0.3, drop_path_rate=0.2, randaug_layers=2,
                   randaug_magnitude=9))
  balanced = os.path.join(config.gen_dir(0), 'balanced')
  os.makedirs(balanced)
  with open(os.path.join(balanced, 'stats.json'), 'w') as f:
    json.dump({'num_output': 480}, f)
  return config


def test_parse_variants(ablation):
  assert ablation.parse_variants(['recipe', 'bfloat16@50'], 400) == [('recipe', None),
                                                                       ('bfloat16', 50)]
  with pytest.raises(ValueError, match='unknown variant .nosie.'):
    ablation.parse_variants(['nosie'], 400)
  with pytest.raises(ValueError, match="'recipe@x'"):
    ablation.parse_variants(['recipe@x'], 400)
  with pytest.raises(ValueError, match='--steps'):
    ablation.parse_variants(['recipe'], 0)


def test_variants_change_one_choice(ablation, recipe, tmp_path):
  base, rows = ablation.variant_train_config(recipe, 'recipe', 7, str(tmp_path / 'recipe'))
  assert (base.train_steps, rows) == (7, 16 + 48)
  assert base.pseudo.startswith('pseudo:') and base.init_checkpoint == recipe.model_dir(0)
  assert (base.randaug_layers, base.dropout, base.drop_path_rate) == (2, 0.3, 0.2)

  quiet, _ = ablation.variant_train_config(recipe, 'no_noise', 7, str(tmp_path / 'q'))
  assert (quiet.randaug_layers, quiet.dropout, quiet.drop_path_rate) == (0, 0.0, 0.0)
  assert quiet.pseudo == base.pseudo and quiet.init_checkpoint == base.init_checkpoint

  scratch, _ = ablation.variant_train_config(recipe, 'scratch', 7, str(tmp_path / 's'))
  assert scratch.init_checkpoint is None and scratch.randaug_layers == 2

  ratio1, rows1 = ablation.variant_train_config(recipe, 'ratio1', 7, str(tmp_path / 'r'))
  assert rows1 == 32 and ratio1.unlabeled_ratio == 1.0

  bf16, _ = ablation.variant_train_config(recipe, 'bfloat16', 7, str(tmp_path / 'b'))
  assert bf16.precision == 'mixed_bfloat16' and base.precision == 'float32'


def test_labeled_only_keeps_rows_and_schedule(ablation, recipe, tmp_path):
  base, rows = ablation.variant_train_config(recipe, 'recipe', 7, str(tmp_path / 'recipe'))
  only, rows_only = ablation.variant_train_config(recipe, 'labeled_only', 7, str(tmp_path / 'l'))
  assert only.pseudo is None and rows_only == rows == only.batch_size
  # Peak learning rate (base * batch / 256) and warmup steps (epochs * examples / batch) agree.
  assert only.base_learning_rate * only.batch_size == pytest.approx(
      base.base_learning_rate * base.batch_size)
  assert only.warmup_epochs / only.batch_size == pytest.approx(
      base.warmup_epochs / base.batch_size)


@pytest.mark.parametrize('name,label,threshold', [('hard', 'hard', None), ('soft_t2', None, None),
                                                  ('conf07', None, 0.7),
                                                  ('hard_conf07', 'hard', 0.7),
                                                  ('conf09', None, 0.9)])
def test_pseudo_label_variants_relabel_with_their_settings(ablation, recipe, tmp_path,
                                                           monkeypatch, name, label, threshold):
  calls = []

  def relabel(config, out_dir, filter_overrides=None, **label_overrides):
    calls.append((filter_overrides or {}, label_overrides))
    return os.path.join(out_dir, 'balanced')
  monkeypatch.setattr(ablation, '_relabel', relabel)
  config, _ = ablation.variant_train_config(recipe, name, 7, str(tmp_path / name))
  (filters, labels), = calls
  assert labels.get('label_type') == label and filters.get('threshold') == threshold
  assert config.pseudo == 'pseudo:' + os.path.join(str(tmp_path / name), 'balanced', '*.tfrecord')
  assert config.train_steps == 7 and config.randaug_layers == 2
