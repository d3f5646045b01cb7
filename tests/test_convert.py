"""Official TF1 checkpoint <-> model dir conversion (noisy_student_tf.convert, issue 9).

The checkpoints here are written the way the official code's checkpoints are: a
`tf.compat.v1.train.Saver` over a {official name: variable} dict, with names produced by an
independent re-implementation of the official builder (block strings, round_filters /
round_repeats, TF1 per-scope layer counters in call order).  The same re-implementation runs the
official forward pass with raw TF ops ('SAME' padding, BN eps 1e-3, SE width from the block's
input filters) reading the tensors by official name, and the converted Keras model must match its
logits.
"""

import json
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from noisy_student_tf import convert, model_dir, models

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---------------------------------------------------------------------------------------------
# An independent sketch of the official EfficientNet graph (tensorflow/tpu efficientnet_builder.py
# and efficientnet_model.py), used to name, create and evaluate official-layout checkpoints.

OFFICIAL_BLOCKS = ['r1_k3_s11_e1_i32_o16_se0.25', 'r2_k3_s22_e6_i16_o24_se0.25',
                   'r2_k5_s22_e6_i24_o40_se0.25', 'r3_k3_s22_e6_i40_o80_se0.25',
                   'r3_k5_s11_e6_i80_o112_se0.25', 'r4_k5_s22_e6_i112_o192_se0.25',
                   'r1_k3_s11_e6_i192_o320_se0.25']
OFFICIAL_PARAMS = {'efficientnet-b0': (1.0, 1.0), 'efficientnet-b1': (1.0, 1.1)}
EMA = '/ExponentialMovingAverage'


def _round_filters(f, width):
  f *= width
  new = max(8, int(f + 4) // 8 * 8)
  return new + 8 if new < 0.9 * f else new


def official_blocks(name):
  """The block list of the official builder: dicts with k, s, e, i, o, se."""
  width, depth = OFFICIAL_PARAMS[name]
  blocks = []
  for text in OFFICIAL_BLOCKS:
    d = dict(re.match(r'(\D+)(.*)', part).groups() for part in text.split('_'))
    args = dict(k=int(d['k']), s=int(d['s'][0]), e=int(d['e']), i=_round_filters(int(d['i']), width),
                o=_round_filters(int(d['o']), width), se=float(d['se']))
    for r in range(int(math.ceil(depth * int(d['r'])))):
      blocks.append(dict(args) if r == 0 else dict(args, i=args['o'], s=1))
  return blocks


class Scope:
  """TF1 `tf.layers` naming: the n-th layer of a base name called in a scope gets `_n`."""

  def __init__(self, path):
    self.path, self.counts = path, {}

  def layer(self, base):
    n = self.counts.get(base, 0)
    self.counts[base] = n + 1
    return f'{self.path}/{base}' + (f'_{n}' if n else '')


def official_forward(name, images, get, num_classes=1000):
  """Runs the official EfficientNet inference graph with raw TF ops.

  get(variable name, shape) -> the tensor value; images: float32 NHWC, already normalised.
  Returns logits [N, num_classes].
  """
  swish = tf.nn.swish

  def conv(x, scope, shape, stride=1):
    return tf.nn.conv2d(x, get(scope.layer('conv2d') + '/kernel', shape), stride, 'SAME')

  def bn(x, scope):
    layer, c = scope.layer('tpu_batch_normalization'), x.shape[-1]
    g, b, m, v = (get(f'{layer}/{w}', (c,)) for w in ('gamma', 'beta', 'moving_mean',
                                                        'moving_variance'))
    return tf.nn.batch_normalization(x, m, v, b, g, 1e-3)

  stem = Scope(f'{name}/stem')
  x = swish(bn(conv(images, stem, (3, 3, 3, _round_filters(32, OFFICIAL_PARAMS[name][0])), 2), stem))
  for idx, blk in enumerate(official_blocks(name)):
    scope, inputs = Scope(f'{name}/blocks_{idx}'), x
    mid = blk['i'] * blk['e']
    if blk['e'] != 1:
      x = swish(bn(conv(x, scope, (1, 1, blk['i'], mid)), scope))
    dw = get(f'{scope.path}/depthwise_conv2d/depthwise_kernel', (blk['k'], blk['k'], mid, 1))
    x = swish(bn(tf.nn.depthwise_conv2d(x, dw, (1, blk['s'], blk['s'], 1), 'SAME'), scope))
    se, reduced = Scope(f'{scope.path}/se'), max(1, int(blk['i'] * blk['se']))
    s = tf.reduce_mean(x, [1, 2], keepdims=True)
    layer = se.layer('conv2d')
    s = swish(tf.nn.conv2d(s, get(layer + '/kernel', (1, 1, mid, reduced)), 1, 'SAME') +
              get(layer + '/bias', (reduced,)))
    layer = se.layer('conv2d')
    s = (tf.nn.conv2d(s, get(layer + '/kernel', (1, 1, reduced, mid)), 1, 'SAME') +
         get(layer + '/bias', (mid,)))
    x = tf.sigmoid(s) * x
    x = bn(conv(x, scope, (1, 1, mid, blk['o'])), scope)
    if blk['s'] == 1 and blk['i'] == blk['o']:
      x = x + inputs
  head = Scope(f'{name}/head')
  x = swish(bn(conv(x, head, (1, 1, x.shape[-1], _round_filters(1280, OFFICIAL_PARAMS[name][0]))),
               head))
  x = tf.reduce_mean(x, [1, 2])
  dense = head.layer('dense')
  return tf.matmul(x, get(dense + '/kernel', (x.shape[-1], num_classes))) + get(
      dense + '/bias', (num_classes,))


def make_official_tensors(name, seed, num_classes=1000, slots=False):
  """Creates every variable of the official model by running its graph once: raw values, EMA
  shadows that differ from them, global_step, and (slots=True) RMSProp slots of trainables."""
  rng = np.random.default_rng(seed)
  raw = {}

  def get(var, shape):
    if var not in raw:
      leaf = var.rsplit('/', 1)[1]
      if leaf == 'moving_variance':
        value = rng.uniform(0.5, 2.0, shape)
      elif leaf == 'gamma':
        value = rng.uniform(0.5, 1.5, shape)
      elif leaf in ('beta', 'moving_mean', 'bias'):
        value = rng.normal(0, 0.1, shape)
      else:
        fan_in = np.prod(shape[:-1]) if leaf != 'depthwise_kernel' else shape[0] * shape[1]
        value = rng.normal(0, 1 / math.sqrt(fan_in), shape)
      raw[var] = value.astype(np.float32)
    assert raw[var].shape == tuple(shape), var
    return tf.constant(raw[var])

  official_forward(name, tf.zeros((1, 32, 32, 3)), get, num_classes)
  tensors = dict(raw)
  for var, value in raw.items():
    tensors[var + EMA] = (value * rng.uniform(0.9, 1.1, value.shape)).astype(np.float32)
    if slots and 'moving_' not in var:
      tensors[var + '/RMSProp'] = np.ones_like(value)
      tensors[var + '/RMSProp_1'] = np.zeros_like(value)
  tensors['global_step'] = np.int64(123456)
  return tensors


def saver_write(prefix, tensors):
  """Writes {name: array} with tf.compat.v1.train.Saver over a name -> variable dict (eager)."""
  os.makedirs(os.path.dirname(prefix), exist_ok=True)
  var_list = {n: tf.Variable(v, name=f'v{i}') for i, (n, v) in enumerate(tensors.items())}
  return tf.compat.v1.train.Saver(var_list=var_list).save(None, prefix, write_meta_graph=False)


def read_all(prefix):
  reader = tf.train.load_checkpoint(prefix)
  return {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}


# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def b0(tmp_path_factory):
  """(prefix, tensors) of an official-layout B0 checkpoint with EMA shadows and RMSProp slots."""
  tensors = make_official_tensors('efficientnet-b0', seed=0, slots=True)
  folder = tmp_path_factory.mktemp('noisy_student_efficientnet-b0')
  return saver_write(str(folder / 'model.ckpt'), tensors), tensors


@pytest.fixture(scope='module')
def b0_dir(b0, tmp_path_factory):
  prefix, _ = b0
  out = tmp_path_factory.mktemp('converted') / 'ns-b0'
  report = convert.convert_checkpoint(os.path.dirname(prefix), out)
  return out, report


def _images(n, size, seed=1):
  return np.random.default_rng(seed).normal(0, 1, (n, size, size, 3)).astype(np.float32)


def test_b0_converts_with_ema_shadows_and_official_convention(b0, b0_dir):
  prefix, tensors = b0
  out, report = b0_dir
  assert model_dir.is_complete(out)
  assert report.model == 'efficientnet-b0' and report.scope == 'efficientnet-b0'
  assert report.weights_source == 'ExponentialMovingAverage'
  assert report.num_weights == 311  # stem 5 + head 7 + 14 (e1 block) + 15 * 19
  # every checkpoint variable is used or reported: the optimizer slots and global_step here
  used = report.num_weights * 2
  assert used + len(report.ignored) == len(tensors)
  assert set(report.ignored.values()) == {'optimizer slot',
                                          'training bookkeeping (global_step, optimizer scalars)'}
  config = model_dir.read_config(out)
  assert config.input == convert.OFFICIAL_INPUT
  assert config.input.resize_method == 'bicubic_tf1' and config.input.crop_padding == 32
  assert config.input.mean == model_dir.IMAGENET_MEAN and config.input.std == model_dir.IMAGENET_STD
  assert len(config.class_names) == 1000 and config.class_names[0] == 'n01440764'
  assert config.model.resolution == 224 and config.training['global_step'] == 123456

  model, _ = model_dir.load_model(out, 'ema', resolution=64)
  layout = {w.keras_path: w.official_name for w in convert.official_layout(config.model)}
  for which, suffix in (('ema', EMA), ('raw', '')):
    model.load_weights(model_dir.weights_path(out, which))
    for v in model.weights:
      np.testing.assert_array_equal(v.numpy(), tensors[layout[v.path] + suffix])
  assert not np.array_equal(tensors['efficientnet-b0/stem/conv2d/kernel'],
                            tensors['efficientnet-b0/stem/conv2d/kernel' + EMA])


def _official_logits(prefix, name, images, ema=True):
  reader = tf.compat.v1.train.load_checkpoint(prefix)

  def get(var, shape):
    value = reader.get_tensor(var + (EMA if ema else ''))
    assert value.shape == tuple(shape), var
    return tf.constant(value)
  return official_forward(name, tf.constant(images), get).numpy()


def _assert_close(ours, ref):
  rel = np.max(np.abs(ours - ref)) / np.max(np.abs(ref))
  assert rel < 1e-4, rel
  assert np.array_equal(ours.argmax(-1), ref.argmax(-1))


def test_b0_logits_match_official_graph(b0, b0_dir):
  prefix, _ = b0
  out, _ = b0_dir
  images = _images(2, 64)  # even size: TF 'SAME' pads stride-2 convs asymmetrically
  ref = _official_logits(prefix, 'efficientnet-b0', images)
  model, _ = model_dir.load_model(out, 'ema', resolution=64)
  _assert_close(model(images, training=False).numpy(), ref)
  assert np.std(ref) > 0.1  # the comparison is not between near-constant outputs


def test_round_trip_to_official_names_is_bit_identical(b0, b0_dir, tmp_path):
  _, tensors = b0
  out, _ = b0_dir
  result = convert.export_official(out, tmp_path / 'export' / 'model.ckpt')
  back = read_all(result['prefix'])
  expected = {n: v for n, v in tensors.items() if '/RMSProp' not in n}
  assert set(back) == set(expected)
  for n, v in expected.items():
    assert back[n].dtype == np.asarray(v).dtype and back[n].shape == np.shape(v), n
    assert back[n].tobytes() == np.asarray(v).tobytes(), n
  assert tf.train.latest_checkpoint(str(tmp_path / 'export')) == result['prefix']
  # the exported checkpoint fits the converter again: shadows served, only global_step left over
  index = convert.CheckpointIndex(tmp_path / 'export')
  config = convert.infer_config(index.shapes)
  plan = convert.make_plan(index.shapes, index.dtypes, convert.official_layout(config))
  assert plan.primary_source == 'ExponentialMovingAverage' and list(plan.ignored) == ['global_step']


def test_b1_via_tool_with_two_unexpanded_blocks(tmp_path):
  tensors = make_official_tensors('efficientnet-b1', seed=2)
  assert 'efficientnet-b1/blocks_1/conv2d/kernel' in tensors  # project conv of an e1 block
  assert 'efficientnet-b1/blocks_1/tpu_batch_normalization_2/gamma' not in tensors
  assert 'efficientnet-b1/blocks_2/tpu_batch_normalization_2/gamma' in tensors
  prefix = saver_write(str(tmp_path / 'noisy_student_efficientnet-b1' / 'model.ckpt'), tensors)
  out = tmp_path / 'ns-b1'
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, 'tools', 'convert_checkpoint.py'),
       f'--checkpoint={prefix}', f'--model_dir={out}'],
      capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  report = json.loads(proc.stdout)
  assert report['model'] == 'efficientnet-b1' and report['resolution'] == 240
  assert report['weights_source'] == 'ExponentialMovingAverage'
  assert report['ignored'] == {'training bookkeeping (global_step, optimizer scalars)':
                               {'count': 1, 'examples': ['global_step']}}
  images = _images(2, 48, seed=3)
  model, _ = model_dir.load_model(out, 'ema', resolution=48)
  _assert_close(model(images, training=False).numpy(),
                _official_logits(prefix, 'efficientnet-b1', images))
  # raw on request: the served weights are then the raw values
  raw = convert.convert_checkpoint(prefix, tmp_path / 'ns-b1-raw', weights='raw')
  assert raw.weights_source == 'raw'
  assert sum(r.startswith('EMA shadow') for r in raw.ignored.values()) == raw.num_weights
  model, _ = model_dir.load_model(tmp_path / 'ns-b1-raw', 'ema', resolution=48)
  _assert_close(model(images, training=False).numpy(),
                _official_logits(prefix, 'efficientnet-b1', images, ema=False))


@pytest.mark.parametrize('change, message', [
    ('missing', "missing variable 'efficientnet-b0/blocks_3/se/conv2d_1/bias'"),
    ('shape', "variable 'efficientnet-b0/blocks_5/depthwise_conv2d/depthwise_kernel' has shape"),
    ('unknown', "unknown variable 'efficientnet-b0/blocks_2/extra/kernel'"),
    ('partial_ema', "missing EMA shadow 'efficientnet-b0/head/dense/bias/ExponentialMovingAverage'"),
])
def test_mismatched_checkpoint_fails_naming_the_variable(b0, tmp_path, change, message):
  _, tensors = b0
  tensors = {n: v for n, v in tensors.items() if '/RMSProp' not in n}
  if change == 'missing':
    del tensors['efficientnet-b0/blocks_3/se/conv2d_1/bias']
  elif change == 'shape':
    tensors['efficientnet-b0/blocks_5/depthwise_conv2d/depthwise_kernel'] = np.zeros(
        (5, 5, 240, 1), np.float32)
  elif change == 'unknown':
    tensors['efficientnet-b0/blocks_2/extra/kernel'] = np.zeros((2,), np.float32)
  else:
    del tensors['efficientnet-b0/head/dense/bias' + EMA]
  prefix = saver_write(str(tmp_path / 'ckpt' / 'model.ckpt'), tensors)
  with pytest.raises(ValueError, match=re.escape(message)):
    convert.convert_checkpoint(prefix, tmp_path / 'out' / 'model')
  assert not (tmp_path / 'out').exists() or os.listdir(tmp_path / 'out') == []


def test_truncated_checkpoint_fails_and_writes_nothing(b0, tmp_path):
  prefix, _ = b0
  folder = tmp_path / 'ckpt'
  folder.mkdir()
  for f in os.listdir(os.path.dirname(prefix)):
    if f.startswith('model.ckpt'):
      data = open(os.path.join(os.path.dirname(prefix), f), 'rb').read()
      if '.data-' in f:
        data = data[:len(data) // 2]
      (folder / f).write_bytes(data)
  (tmp_path / 'out').mkdir()
  with pytest.raises(ValueError, match=r"cannot read variable 'efficientnet-b0/.*' .*truncated"):
    convert.convert_checkpoint(folder / 'model.ckpt', tmp_path / 'out' / 'model')
  assert os.listdir(tmp_path / 'out') == []


def test_bad_arguments_fail_before_work(b0, b0_dir, tmp_path):
  prefix, _ = b0
  out, _ = b0_dir
  with pytest.raises(ValueError, match='exists and is not empty'):
    convert.convert_checkpoint(prefix, out)
  with pytest.raises(ValueError, match="weights must be one of"):
    convert.convert_checkpoint(prefix, tmp_path / 'x', weights='shadow')
  with pytest.raises(ValueError, match=r'expected the file .*nothere\.index'):
    convert.convert_checkpoint(tmp_path / 'nothere', tmp_path / 'x')
  with pytest.raises(ValueError, match="variable 'efficientnet-b0/blocks_1/depthwise_conv2d/"
                     "depthwise_kernel' has shape"):
    convert.convert_checkpoint(prefix, tmp_path / 'x', model='efficientnet-b1')
  with pytest.raises(ValueError, match='3 class names given, the checkpoint has 1000'):
    convert.convert_checkpoint(prefix, tmp_path / 'x', class_names=['a', 'b', 'c'])
  assert not (tmp_path / 'x').exists()


def test_model_inference_from_scope_and_shapes():
  for name in models.NAMED_VARIANTS:
    config = models.make_config(name)
    shapes = {w.official_name: w.shape for w in convert.official_layout(config)}
    hint = '/ckpts/noisy_student_efficientnet-l2_475/model.ckpt' if name.endswith('475') else ''
    assert convert.infer_config(shapes, path_hint=hint).name == name
  # another scope prefix (the NS training graph's teacher) and a 10-class head
  config = models.make_config('b3', 10)
  shapes = {w.official_name: w.shape for w in
            convert.official_layout(config, scope='teacher_model/efficientnet-b3')}
  inferred = convert.infer_config(shapes)
  assert (inferred.name, inferred.num_classes) == ('efficientnet-b3', 10)
  assert convert.infer_config(shapes, resolution=320).resolution == 320
  with pytest.raises(ValueError, match='no variable looks like an official EfficientNet'):
    convert.infer_config({'foo/bar': (3,)})
