"""EfficientNet builder: parameter counts, FLOPs, backends, noise, training, and bad input."""

import sys

import keras
import numpy as np
import pytest

from conftest import REPO, TINY, run_without_tensorflow
from noisy_student_tf import models
from noisy_student_tf.models import scaling

VARIANTS = [f'b{i}' for i in range(8)]
# EfficientNet paper, Table 2: FLOPs (multiply-adds) at each variant's own resolution.
PAPER_FLOPS = {'b0': 0.39e9, 'b1': 0.70e9, 'b2': 1.0e9, 'b3': 1.8e9, 'b4': 4.2e9, 'b5': 9.9e9,
               'b6': 19e9, 'b7': 37e9}


def _trainable(model):
  return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize('variant', VARIANTS)
def test_trainable_params_equal_keras_applications(variant):
  ours = models.build_model(f'efficientnet-{variant}')
  reference = getattr(keras.applications, f'EfficientNet{variant.upper()}')(weights=None)
  assert _trainable(ours) == _trainable(reference)
  # The analytic profile counts exactly what the built model holds.
  prof = models.profile(models.make_config(variant))
  assert prof.trainable_params == _trainable(ours)
  assert prof.params == ours.count_params()


@pytest.mark.parametrize('variant', VARIANTS)
def test_flops_match_paper_table(variant):
  flops = models.profile(models.make_config(variant)).flops
  assert abs(flops / PAPER_FLOPS[variant] - 1) < 0.08, flops


def test_l2_is_480m_parameters_and_l2_475_differs_only_in_resolution():
  l2 = models.make_config('efficientnet-l2')
  l2_475 = models.make_config('efficientnet-l2-475')
  params = models.profile(l2).params
  assert abs(params / 480e6 - 1) < 0.01, params
  assert (l2.width, l2.depth, l2.dropout, l2.resolution) == (4.3, 5.3, 0.5, 800)
  assert l2_475.resolution == 475 and models.profile(l2_475).params == params
  arch = models.describe(l2)
  assert (arch.stem_filters, arch.head_filters, len(arch.blocks)) == (136, 5504, 88)


def test_compound_rule_and_rounding():
  row = models.compound_row(2)
  assert row.depth == pytest.approx(1.2**2) and row.width == pytest.approx(1.1**2)
  assert row.resolution == 296  # 224 * 1.15**2 = 296.2, on a multiple of 8
  wide = models.compound_row(1, beta=1.3)
  assert wide.width == pytest.approx(1.3)
  config = models.make_config('b0', phi=1)
  assert (config.depth, config.width) == (pytest.approx(1.2), pytest.approx(1.1))
  # Multiple of 8, never more than 10% below the scaled value; repeats round up.
  for filters in (16, 24, 40, 80, 112, 192, 320, 1280):
    for width in (0.25, 0.5, 1.1, 1.4, 4.3):
      r = scaling.round_filters(filters, width)
      assert r % 8 == 0 and r >= 0.9 * filters * width
  assert scaling.round_repeats(3, 1.1) == 4 and scaling.round_repeats(1, 0.25) == 1


def test_stage_table_se_and_stochastic_depth_schedule():
  arch = models.describe(models.make_config('b0', drop_path_rate=0.2))
  assert [b.filters_out for b in arch.blocks] == [16, 24, 24, 40, 40, 80, 80, 80, 112, 112, 112,
                                                  192, 192, 192, 192, 320]
  # SE squeezes to a quarter of the block's *input* filters, not the expanded ones.
  assert arch.blocks[1].se_filters == 4 and arch.blocks[1].expanded_filters == 96
  rates = [b.drop_path_rate for b in arch.blocks]
  assert rates[0] == 0 and rates[-1] == pytest.approx(0.2)
  assert np.allclose(np.diff(rates), 0.2 / (len(rates) - 1))


def test_small_image_variant_keeps_resolution_in_stages_2_and_3():
  model = models.build_model('b0', 10, **TINY)
  shapes = {l.name: l.output.shape for l in model.layers}
  assert shapes['stem_activation'][1] == 16
  assert shapes['block3a_project_bn'][1] == 16  # stages 2 and 3 at stride 1
  assert shapes['top_activation'][1] == 4
  assert model.output.shape == (None, 10)


def test_feature_extractor_and_any_input_size():
  features = models.build_model('b0', include_top=False, width=0.25, depth=0.25, resolution=64,
                                input_shape=(None, None, 3))
  out = features(np.zeros((2, 96, 80, 3), 'float32'))
  assert out.shape == (2, 320)


@pytest.mark.parametrize('backend', ['jax', 'numpy'])
def test_models_import_and_build_without_tensorflow(backend):
  result = run_without_tensorflow('''
    import keras
    from noisy_student_tf import models
    model = models.build_model('efficientnet-b0')
    assert keras.backend.backend() == sys.argv[1], keras.backend.backend()
    assert not [m for m in sys.modules if m.startswith('tensorflow')]
    print('params', model.count_params())
  ''', backend, env={'KERAS_BACKEND': backend,
                     # JAX runs every kernel initializer as its own XLA program, one compile per
                     # weight shape (45 in B0), most of this test's CPU time; what it checks does
                     # not depend on how well XLA optimises them.
                     'XLA_FLAGS': '--xla_backend_optimization_level=0'})
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'params 5330564' in result.stdout


def _digits_32px():
  from sklearn.datasets import load_digits
  digits = load_digits()
  images = digits.images.astype('float32') / 16.0  # 8x8 in [0, 1]
  images = np.kron(images, np.ones((4, 4), 'float32'))  # 32x32
  images = np.repeat(images[..., None], 3, axis=-1)
  return (images - 0.5) / 0.25, digits.target.astype('int32')


def test_tiny_model_trains_and_loss_falls():
  keras.utils.set_random_seed(0)
  x, y = _digits_32px()
  x, y = x[:512], y[:512]
  # Faster batch-norm statistics so that the inference-mode loss reflects a few dozen steps.
  model = models.build_model('b0', 10, bn_momentum=0.9, **TINY)
  model.compile(optimizer=keras.optimizers.Adam(3e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  before = model.evaluate(x, y, verbose=0, batch_size=128)
  # 4 epochs (32 steps): the training loss is then 0.02x its first epoch's and the evaluated
  # loss 0.04x its start (seed 0; after 3 epochs the inference-mode loss is still 0.47x, its
  # batch-norm statistics lagging), both far below the 0.5x asked.
  history = model.fit(x, y, epochs=4, batch_size=64, verbose=0).history['loss']
  after = model.evaluate(x, y, verbose=0, batch_size=128)
  assert history[-1] < 0.5 * history[0], history
  assert after < 0.5 * before, (before, after)


def test_inference_is_deterministic_and_training_is_noisy():
  keras.utils.set_random_seed(1)
  model = models.build_model('b0', 10, dropout=0.5, drop_path_rate=0.5, **TINY)
  x = np.random.default_rng(0).normal(size=(8, 32, 32, 3)).astype('float32')
  a = keras.ops.convert_to_numpy(model(x, training=False))
  b = keras.ops.convert_to_numpy(model(x, training=False))
  np.testing.assert_array_equal(a, b)
  c = keras.ops.convert_to_numpy(model(x, training=True))
  d = keras.ops.convert_to_numpy(model(x, training=True))
  assert np.abs(c - d).max() > 1e-3
  drops = [l for l in model.layers if isinstance(l, models.layers.DropPath)]
  arch = models.describe(models.make_config('b0', 10, drop_path_rate=0.5, **TINY))
  expected = [b.drop_path_rate for b in arch.blocks if b.has_skip and b.drop_path_rate > 0]
  assert expected and [l.rate for l in drops] == pytest.approx(expected)


@pytest.mark.parametrize('kwargs, message', [
    (dict(name='efficientnet-b9'), "unknown model name 'efficientnet-b9'"),
    (dict(name='resnet50'), "unknown model name 'resnet50'"),
    (dict(name='b0', width=0), 'width must be a number > 0, got 0'),
    (dict(name='b0', depth=-1.0), 'depth must be a number > 0, got -1.0'),
    (dict(name='b0', resolution=16), 'resolution must be an integer >= 32'),
    (dict(name='b0', resolution=4, small_image=True), 'resolution must be an integer >= 8'),
    (dict(name='b0', num_classes=1), 'num_classes must be an integer >= 2, got 1'),
    (dict(name='b0', dropout=1.0), 'dropout must be in [0, 1), got 1.0'),
    (dict(name='b0', phi=1, alpha=0), 'alpha must be > 0, got 0'),
    (dict(name='b0', phi=-1), 'phi must be >= 0, got -1'),
])
def test_bad_input_raises_value_error_naming_the_value(kwargs, message):
  with pytest.raises(ValueError) as info:
    models.build_model(**kwargs)
  assert message in str(info.value)


def test_model_table_lists_every_variant_beside_the_paper():
  sys.path.insert(0, str(REPO / 'tools'))
  import model_table
  rows = model_table.model_rows()
  assert [r['model'] for r in rows] == list(models.NAMED_VARIANTS)
  b3 = rows[3]
  assert (b3['model'], b3['resolution'], b3['dropout'], b3['paper_params']) == (
      'efficientnet-b3', 300, 0.3, 12e6)
  table = model_table.markdown(rows)
  assert table.count('\n') == len(rows) + 1 and '| efficientnet-l2 | 4.3 | 5.3 | 800 | 0.5 | 481M | 480M |' in table


def test_drop_path_rate_and_scale_are_exact_under_bfloat16():
  layer = models.layers.DropPath(0.01, seed=3, dtype='bfloat16')
  x = keras.ops.ones((20000, 1), dtype='bfloat16')
  y = keras.ops.convert_to_numpy(keras.ops.cast(layer(x, training=True), 'float32'))
  dropped = float(np.mean(y == 0))
  assert 0.007 < dropped < 0.013, dropped
  assert np.allclose(y[y > 0], 1 / 0.99, rtol=4e-3)  # bfloat16 resolution of 1/0.99
