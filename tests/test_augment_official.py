"""RandAugment ops against outputs of the OFFICIAL code (numbers only, no official code here).

How the numbers were made (outside this project, in /tmp): google-research/noisystudent at
aac52bf, randaugment.py imported unchanged, its module-level `tf` set to `tf.compat.v1`
(TF1 semantics of tf.where = Select, depthwise_conv2d(rate=), to_float, random_uniform), run
in TensorFlow 2.21 eagerly and inside tf.data map (identical results) with
TF_ENABLE_ONEDNN_OPTS=0 (TensorFlow's plain kernels, as TF1 ran them; with oneDNN on, the
official Sharpness' depthwise convolution uses fused multiply-adds and 14 of the 59 digests,
all Sharpness, differ).  tf.contrib is gone in TF 2.21, so tf.contrib.image.transform/rotate/
translate were replaced by their TF 1.15 formulas (rotation matrix about the centre,
translation [1, 0, -dx, 0, 1, -dy, 0, 0]) on the same kernel, tf.raw_ops.
ImageProjectiveTransformV2 (NEAREST, zeros outside: what contrib called), and
contrib.training.HParams by a plain attribute holder.  Each official op was called through the
official _parse_policy_info (so its own level_to_arg computed the arguments), with
_randomly_negate_tensor replaced by a fixed + or - and, for Cutout, tf.random_uniform by the
fixed centre (cy, cx).  TensorFlow 2.21 converts out-of-range Python ints to uint8 by wrapping
(as TF 1.x did through numpy), so Posterize/Solarize above level 10 ran as officially.

REFERENCE[(size, op, variant)] = (sha256 of the 8 outputs at levels 0, 1, 5, 10, 15, 20, 27, 30
concatenated, first 16 hex digits; the 8 outputs' pixel sums).  variant: '+100' / '-4' = sign
and translate_const (the ImageNet 100 or the small-image R // 8), 'pad40@5,11' = cutout_const
and centre; FinalCutout is the CIFAR recipe's cutout(pad R // 4, replace 128) after
RandAugment.  The image is `fixed_image(size)`.
"""

import hashlib

import numpy as np
import pytest
import tensorflow as tf

from noisy_student_tf.data import augment

LEVELS = (0, 1, 5, 10, 15, 20, 27, 30)


def fixed_image(size):
  rng = np.random.RandomState(2019)
  y, x = np.mgrid[0:size, 0:size]
  base = 30 + (x * 80 // size + y * 64 // size)[..., None] + np.array([0, 25, 55])
  return (base + rng.randint(0, 40, (size, size, 3))).astype(np.uint8)


REFERENCE = {(16, 'AutoContrast', ''): ('3468ee76ae36d1a9',
                            (100850, 100850, 100850, 100850, 100850, 100850, 100850, 100850)),
 (16, 'Brightness', ''): ('5465bbabe3e1b35d',
                          (10712, 30570, 110493, 179187, 192563, 195015, 195770, 195794)),
 (16, 'Color', ''): ('9ce30018c621a38c',
                     (106078, 106857, 110493, 113929, 115899, 115846, 114974, 114784)),
 (16, 'Contrast', ''): ('280603935beb6bd1',
                        (11398, 31135, 110493, 178895, 192435, 194956, 195759, 195789)),
 (16, 'Cutout', 'pad2@0,15'): ('6d38e4bc6b5ca38b',
                               (110493, 110493, 110355, 110173, 109824, 109313, 108734, 108098)),
 (16, 'Cutout', 'pad2@5,11'): ('66b96253c60f24a2',
                               (110493, 110493, 110286, 109551, 108329, 106828, 104771, 103766)),
 (16, 'Cutout', 'pad40@0,15'): ('dfc14de6734df851',
                                (110493, 109313, 98304, 98304, 98304, 98304, 98304, 98304)),
 (16, 'Cutout', 'pad40@5,11'): ('8b82eb8b74e844a3',
                                (110493, 106828, 98304, 98304, 98304, 98304, 98304, 98304)),
 (16, 'Equalize', ''): ('6994e079774ca53a',
                        (101234, 101234, 101234, 101234, 101234, 101234, 101234, 101234)),
 (16, 'Invert', ''): ('db8c0362def1ee98', (85347, 85347, 85347, 85347, 85347, 85347, 85347, 85347)),
 (16, 'Posterize', ''): ('a350fbfe100fd027',
                         (63104, 63104, 85568, 104624, 109296, 110493, 63104, 63104)),
 (16, 'Rotate', '+100'): ('f91323e0f002e5c2',
                          (110493, 110493, 109574, 108759, 108904, 108556, 109781, 110493)),
 (16, 'Rotate', '-100'): ('e6c155962795348d',
                          (110493, 110493, 109554, 108556, 108885, 108759, 109919, 110493)),
 (16, 'Sharpness', ''): ('70e24b38ba6ada8f',
                         (109898, 109935, 110493, 110560, 110910, 111224, 111602, 111896)),
 (16, 'ShearX', '+100'): ('f6a1971e7f31661a',
                          (110493, 110493, 111038, 111146, 110613, 109969, 108117, 106956)),
 (16, 'ShearX', '-100'): ('ba67e8b12805a4cd',
                          (110493, 110493, 107336, 104336, 101711, 99455, 97103, 96438)),
 (16, 'ShearY', '+100'): ('30e1545b6f76cf96',
                          (110493, 110493, 110474, 109982, 109203, 108283, 106187, 104814)),
 (16, 'ShearY', '-100'): ('c20ea6f5549185f7',
                          (110493, 110493, 107485, 104691, 102150, 99871, 97421, 96493)),
 (16, 'Solarize', ''): ('a4214b2f68d6f547',
                        (85347, 85347, 71976, 85347, 71976, 85347, 88203, 85347)),
 (16, 'SolarizeAdd', ''): ('d5d3b2a551ae5ec0',
                           (110493, 113518, 125618, 140743, 151155, 152241, 152241, 152241)),
 (16, 'TranslateX', '+100'): ('a5a944bc2c977616',
                              (110493, 109980, 98304, 98304, 98304, 98304, 98304, 98304)),
 (16, 'TranslateX', '+2'): ('e033f4fc10f48cf5',
                            (110493, 110493, 111674, 112503, 112916, 113151, 113246, 113096)),
 (16, 'TranslateX', '-100'): ('bbf6aecaedb381a8',
                              (110493, 95701, 98304, 98304, 98304, 98304, 98304, 98304)),
 (16, 'TranslateX', '-2'): ('5a8327b32d046b5b',
                            (110493, 110493, 108024, 105662, 103642, 101854, 100127, 98817)),
 (16, 'TranslateY', '+100'): ('b47f5b9bbd4d9c17',
                              (110493, 108543, 98304, 98304, 98304, 98304, 98304, 98304)),
 (16, 'TranslateY', '+2'): ('7370677cc001bf4b',
                            (110493, 110493, 111185, 111726, 112015, 112068, 111951, 111552)),
 (16, 'TranslateY', '-100'): ('55d0e974b1c291cb',
                              (110493, 97245, 98304, 98304, 98304, 98304, 98304, 98304)),
 (16, 'TranslateY', '-2'): ('5bbe0e373a0995c5',
                            (110493, 110493, 108351, 106263, 104517, 103020, 101538, 100254)),
 (32, 'AutoContrast', ''): ('e78f5875ff2a7a9b',
                            (441735, 441735, 441735, 441735, 441735, 441735, 441735, 441735)),
 (32, 'Brightness', ''): ('c8bedf033b20b8eb',
                          (43437, 123972, 448069, 720697, 771631, 780345, 782589, 782900)),
 (32, 'Color', ''): ('0332587fcc6052ce',
                     (430575, 433699, 448069, 461406, 469514, 469559, 465174, 464176)),
 (32, 'Contrast', ''): ('0648ed22d5fb3073',
                        (54484, 132826, 448069, 716293, 769649, 779495, 782282, 782683)),
 (32, 'Cutout', 'pad40@0,31'): ('e13954a7dc326296',
                                (448069, 446740, 423161, 393216, 393216, 393216, 393216, 393216)),
 (32, 'Cutout', 'pad40@5,11'): ('36f42dd6e6ae233e',
                                (448069, 451283, 425368, 393216, 393216, 393216, 393216, 393216)),
 (32, 'Cutout', 'pad4@0,31'): ('7d57096a49f39d7c',
                               (448069, 448069, 447678, 446740, 445143, 443189, 440816, 437825)),
 (32, 'Cutout', 'pad4@5,11'): ('e0aa72f058399bc7',
                               (448069, 448069, 448938, 451283, 454465, 456617, 458236, 457746)),
 (32, 'Equalize', ''): ('3afaca7275c78eef',
                        (389834, 389834, 389834, 389834, 389834, 389834, 389834, 389834)),
 (32, 'FinalCutout', 'pad8@16,16'): ('8ddb60c347c1f23e', (434558,)),
 (32, 'FinalCutout', 'pad8@31,0'): ('94a17869af57e345', (445687,)),
 (32, 'FinalCutout', 'pad8@5,11'): ('a7b5ee8909b9f829', (456617,)),
 (32, 'Invert', ''): ('3683792bff7b5a5f',
                      (335291, 335291, 335291, 335291, 335291, 335291, 335291, 335291)),
 (32, 'Posterize', ''): ('10919e6dc0c04f13',
                         (265728, 265728, 352064, 425200, 443456, 448069, 265728, 265728)),
 (32, 'Rotate', '+100'): ('b2652eaa0f36f004',
                          (448069, 447237, 443256, 440291, 439320, 440307, 444772, 448069)),
 (32, 'Rotate', '-100'): ('8ec8392659bf468d',
                          (448069, 446877, 443084, 440307, 439320, 440291, 445211, 448069)),
 (32, 'Sharpness', ''): ('c22995a5ace79f28',
                         (445596, 445768, 448069, 448068, 449345, 450219, 451190, 452017)),
 (32, 'ShearX', '+100'): ('b9e8c842999f2832',
                          (448069, 448218, 449632, 449593, 447618, 443945, 435995, 431505)),
 (32, 'ShearX', '-100'): ('2b4b42a7b06fee81',
                          (448069, 445087, 434186, 421482, 410322, 400779, 390934, 387726)),
 (32, 'ShearY', '+100'): ('4d45b8aff994460b',
                          (448069, 447728, 447287, 445340, 441736, 436865, 427764, 422909)),
 (32, 'ShearY', '-100'): ('02283f3ea0d90351',
                          (448069, 444859, 434974, 423065, 412099, 402598, 392025, 388351)),
 (32, 'Solarize', ''): ('dfd397cc1b2e6ff6',
                        (335291, 335036, 284447, 335291, 284447, 335291, 354065, 335291)),
 (32, 'SolarizeAdd', ''): ('20039f7e1d032ad6',
                           (448069, 459025, 502849, 557629, 596598, 600446, 600481, 600481)),
 (32, 'TranslateX', '+100'): ('bb2bde626d87f5f0',
                              (448069, 457371, 393216, 393216, 393216, 393216, 393216, 393216)),
 (32, 'TranslateX', '+4'): ('185d163734641567',
                            (448069, 448069, 451933, 454533, 456654, 457515, 457069, 456513)),
 (32, 'TranslateX', '-100'): ('50799bd0780bfad4',
                              (448069, 404762, 393216, 393216, 393216, 393216, 393216, 393216)),
 (32, 'TranslateX', '-4'): ('b99bd5c743235eb2',
                            (448069, 448069, 438100, 428161, 419182, 411362, 401656, 398745)),
 (32, 'TranslateY', '+100'): ('123ea08f3c0b15c9',
                              (448069, 452179, 393216, 393216, 393216, 393216, 393216, 393216)),
 (32, 'TranslateY', '+4'): ('87346dc38d3ad54a',
                            (448069, 448069, 450412, 451811, 452569, 452776, 451249, 450418)),
 (32, 'TranslateY', '-100'): ('f1f23d67f990401d',
                              (448069, 409838, 393216, 393216, 393216, 393216, 393216, 393216)),
 (32, 'TranslateY', '-4'): ('225667e6f3386425',
                            (448069, 448069, 438894, 430791, 423116, 416070, 407091, 404398))}

# the official ops on [100, 180, 250]: Posterize(bits 10) and Solarize(691 / 256) wrap in uint8
WRAP_PROBES = {('Posterize', 27): [0, 128, 128], ('Solarize', 27): [100, 75, 5],
               ('Solarize', 10): [155, 75, 5]}


def ours(size, name, variant, level):
  img = tf.constant(fixed_image(size))
  if name == 'FinalCutout':
    cy, cx = map(int, variant.split('@')[1].split(','))
    return augment.cutout(img, size // 4, tf.constant([cy, cx]))
  if name in augment.SIGNED_OPS:
    ops = augment.build_ops(level, translate_const=int(variant[1:]))
    return ops[name](img, negate=variant[0] == '-')
  if name == 'Cutout':
    pad, at = variant[3:].split('@')
    ops = augment.build_ops(level, cutout_const=int(pad))
    return ops[name](img, center=tf.constant([int(v) for v in at.split(',')]))
  return augment.build_ops(level)[name](img)


def test_reference_images_are_the_ones_the_numbers_were_made_on():
  assert hashlib.sha256(fixed_image(16).tobytes()).hexdigest()[:16] == '59de73d1d9616875'
  assert hashlib.sha256(fixed_image(32).tobytes()).hexdigest()[:16] == '84caf2f57cb3279d'


def test_every_op_and_level_reproduces_the_official_outputs():
  covered = {name for _, name, _ in REFERENCE}
  assert covered == set(augment.OP_NAMES) | {'FinalCutout'}
  failures = []
  for (size, name, variant), (digest, sums) in sorted(REFERENCE.items()):
    levels = LEVELS if name != 'FinalCutout' else (0,)
    outs = [ours(size, name, variant, level).numpy() for level in levels]
    got_sums = tuple(int(o.astype(np.int64).sum()) for o in outs)
    got = hashlib.sha256(b''.join(o.tobytes() for o in outs)).hexdigest()[:16]
    if (got, got_sums) != (digest, sums):
      failures.append(f'{size} {name} {variant}: sums {got_sums} != official {sums}')
  assert not failures, '\n'.join(failures)


@pytest.mark.parametrize('key', sorted(WRAP_PROBES))
def test_wrap_probes(key):
  name, level = key
  probe = tf.constant([[[100, 180, 250]]], tf.uint8)
  assert augment.build_ops(level)[name](probe).numpy().ravel().tolist() == WRAP_PROBES[key]
