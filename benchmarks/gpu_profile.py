"""CPU profile of this project's EfficientNet vs keras.applications under JAX/XLA, and of candidate
model changes applied by monkeypatching (the models package is not edited).

Prints (1) StableHLO op counts of the jitted train step and inference under mixed_bfloat16 (lowering
only: cheap, device independent) and (2) CPU float32 step times (median of windows).
Usage: KERAS_BACKEND=jax python benchmarks/gpu_profile.py [counts|times] [variants...]
"""
import collections, contextlib, os, re, statistics, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jax, jax.numpy as jnp, keras, numpy as np
from keras import ops
import gpu_throughput as gt
from noisy_student_tf.models import efficientnet as eff, layers as L


class SqueezeExciteDense(L.SqueezeExcite):
  """SE with the two 1x1 convs done as matmuls on [N, C] (same conv-shaped kernels)."""
  def call(self, inputs):
    squeezed = ops.mean(inputs, axis=(1, 2))
    r = ops.matmul(squeezed, ops.reshape(ops.cast(self.reduce.kernel, inputs.dtype), self.reduce.kernel.shape[2:]))
    r = ops.silu(r + ops.cast(self.reduce.bias, inputs.dtype))
    e = ops.matmul(r, ops.reshape(ops.cast(self.expand.kernel, inputs.dtype), self.expand.kernel.shape[2:]))
    gate = ops.sigmoid(e + ops.cast(self.expand.bias, inputs.dtype))
    return inputs * gate[:, None, None, :]


class DepthwiseShiftSum(keras.layers.DepthwiseConv2D):
  """Depthwise conv as a sum of k*k shifted, strided slices times per-channel taps (fusable
  elementwise work instead of a grouped convolution); 'same' padding as TF, same weights."""
  def call(self, inputs):
    k = self.kernel_size[0]; s = self.strides[0]
    h, w = inputs.shape[1], inputs.shape[2]
    oh, ow = -(-h // s), -(-w // s)
    pad_h = max((oh - 1) * s + k - h, 0); pad_w = max((ow - 1) * s + k - w, 0)
    x = jnp.pad(inputs, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    taps = ops.cast(self.kernel, inputs.dtype)[:, :, :, 0]
    out = None
    for i in range(k):
      for j in range(k):
        term = x[:, i:i + (oh - 1) * s + 1:s, j:j + (ow - 1) * s + 1:s, :] * taps[i, j]
        out = term if out is None else out + term
    return out


VARIANTS = {
    'ours': {}, 'keras_apps': None,
    'se_dense': {'SqueezeExcite': SqueezeExciteDense},
    'dw_shiftsum': {'DW': DepthwiseShiftSum},
    'logits_bf16': {'LOGITS': True},
}


@contextlib.contextmanager
def patched(spec):
  saved = dict(se=eff.SqueezeExcite, dp=eff.DropPath, dw=keras.layers.DepthwiseConv2D, dense=keras.layers.Dense)
  try:
    if 'SqueezeExcite' in spec: eff.SqueezeExcite = spec['SqueezeExcite']
    if 'DropPath' in spec: eff.DropPath = spec['DropPath']
    if 'DW' in spec: keras.layers.DepthwiseConv2D = spec['DW']
    if 'LOGITS' in spec:
      orig = saved['dense']
      def dense(*a, **kw):
        if kw.get('name') == 'logits': kw.pop('dtype', None)
        return orig(*a, **kw)
      keras.layers.Dense = dense
    yield
  finally:
    eff.SqueezeExcite, eff.DropPath = saved['se'], saved['dp']
    keras.layers.DepthwiseConv2D, keras.layers.Dense = saved['dw'], saved['dense']


def build(variant, settings, model='b0'):
  if VARIANTS[variant] is None:
    return gt.build_keras_model('keras_apps', model, settings)
  with patched(VARIANTS[variant]):
    return gt.build_keras_model('ours', model, settings)


def hlo_counts(m, settings):
  x, y = (jnp.asarray(a) for a in gt.keras_batch(settings, 'train'))
  tv = [v.value for v in m.trainable_variables]; ntv = [v.value for v in m.non_trainable_variables]
  def loss_fn(tv, ntv):
    logits, ntv = m.stateless_call(tv, ntv, x, training=True)
    return gt.keras_loss(y, logits), ntv
  train = jax.jit(jax.value_and_grad(loss_fn, has_aux=True)).lower(tv, ntv).as_text()
  infer = jax.jit(lambda tv, ntv: m.stateless_call(tv, ntv, x, training=False)[0]).lower(tv, ntv).as_text()
  out = {}
  for label, text in (('train', train), ('infer', infer)):
    ops_ = collections.Counter(re.findall(r'= (?:"?)(stablehlo\.[a-z_]+)', text))
    out[label] = ops_
  return out


def times(variant, settings, mode):
  m = build(variant, settings)
  run = gt.jax_runner(m, settings, mode)
  warm, rates = gt.time_windows(run, settings, settings.batch(mode))
  return warm, statistics.median(rates), rates


if __name__ == '__main__':
  what = sys.argv[1]; variants = sys.argv[2:] or list(VARIANTS)
  if what == 'counts':
    s = gt.Settings(train_batch=8, infer_batch=8, resolution=224, num_classes=1000, width=0, depth=0,
                    precision='mixed_bfloat16', warmup_steps=1, window_steps=1, windows=1,
                    torch_compile_mode='default', tf_jit_compile=False)
    keys = ['stablehlo.convolution', 'stablehlo.convert', 'stablehlo.reduce', 'stablehlo.multiply',
            'stablehlo.add', 'stablehlo.broadcast_in_dim', 'stablehlo.reshape', 'stablehlo.transpose',
            'stablehlo.pad', 'stablehlo.slice', 'stablehlo.dot_general', 'stablehlo.rng_bit_generator']
    for v in variants:
      keras.mixed_precision.set_dtype_policy('mixed_bfloat16')
      c = hlo_counts(build(v, s), s)
      for mode in ('infer', 'train'):
        print(v, mode, 'total', sum(c[mode].values()), ' '.join(f'{k.split(".")[1]}={c[mode][k]}' for k in keys), flush=True)
  else:
    prec = os.environ.get('PREC', 'float32')
    s = gt.Settings(train_batch=16, infer_batch=32, resolution=64, num_classes=1000,
                    width=float(os.environ.get('W', 0.5)), depth=float(os.environ.get('D', 0.5)),
                    precision=prec, warmup_steps=2, window_steps=3, windows=5,
                    torch_compile_mode='default', tf_jit_compile=False)
    for v in variants:
      for mode in os.environ.get('MODES', 'infer,train').split(','):
        warm, med, rates = times(v, s, mode)
        print(f'{v} {mode} {prec}: {med:.1f} img/s (windows {min(rates):.1f}-{max(rates):.1f}), compile+warm-up {warm:.1f} s', flush=True)
