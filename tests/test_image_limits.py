"""The pixel limit (--max_image_pixels): image sizes read from the header before decoding, so one
huge image of a web crawl is skipped and counted by ns-label (in bounded memory), stops a labeled
run naming it, and is refused with InvalidArgument by the exported serving_default signature."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import REPO, TINY
from noisy_student_tf import model_dir as model_dir_lib
from noisy_student_tf import models
from noisy_student_tf.data import pipeline, preprocessing, sources
from noisy_student_tf.export import saved_model
from noisy_student_tf.selftrain import label as label_lib
from noisy_student_tf.selftrain import pipeline as selftrain_pipeline
from noisy_student_tf.train import trainer

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2', CUDA_VISIBLE_DEVICES='')
HUGE_SIDE = 20000
HUGE_PIXELS = HUGE_SIDE * HUGE_SIDE  # 400 MP: 1.2 GB as decoded RGB
LIMIT = preprocessing.DEFAULT_MAX_IMAGE_PIXELS
# Runs argv[1:] as a child and prints the child's peak resident set (KiB on Linux): a fresh
# process, so that RUSAGE_CHILDREN is that one child's and not the test session's others.
RSS_WRAPPER = ('import resource, subprocess, sys\n'
               'code = subprocess.run(sys.argv[1:]).returncode\n'
               'print("CHILD_MAXRSS_KIB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n'
               'sys.exit(code)\n')


def _run(args, timeout=300):
  return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=ENV, cwd=REPO)


def _encode(array, fmt, **kwargs):
  buf = io.BytesIO()
  Image.fromarray(array).save(buf, fmt, **kwargs)
  return buf.getvalue()


@pytest.fixture(scope='module')
def huge_jpeg(tmp_path_factory):
  """A real 20,000 x 20,000 grayscale JPEG (a few MB), made in a child process so that the
  400 MB array it is encoded from never sits in the test process."""
  path = tmp_path_factory.mktemp('huge') / 'huge.jpg'
  script = ('import sys, tensorflow as tf\n'
            f'image = tf.fill([{HUGE_SIDE}, {HUGE_SIDE}, 1], tf.constant(128, tf.uint8))\n'
            'data = tf.io.encode_jpeg(image, format="grayscale", quality=10).numpy()\n'
            'open(sys.argv[1], "wb").write(data)\n')
  proc = _run([sys.executable, '-c', script, str(path)])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert os.path.getsize(path) < 20 << 20
  return path


@pytest.fixture(scope='module')
def cifar_jpegs(cifar10_small):
  """50 real CIFAR-10 test JPEGs (5 per class), as (class, path) pairs."""
  out = []
  for cls in sorted(os.listdir(cifar10_small / 'test')):
    out += [(cls, p) for p in sorted((cifar10_small / 'test' / cls).iterdir())[:5]]
  return out


@pytest.fixture(scope='module')
def crawl_dir(cifar_jpegs, huge_jpeg, tmp_path_factory):
  """An unlabeled images: folder: the 50 CIFAR JPEGs and the huge one among them."""
  out = tmp_path_factory.mktemp('crawl')
  for i, (_, path) in enumerate(cifar_jpegs):
    (out / f'{i:03d}.jpg').symlink_to(path)
  (out / '025_huge.jpg').symlink_to(huge_jpeg)
  return out


@pytest.fixture(scope='module')
def teacher(tmp_path_factory):
  """A model dir holding an untrained tiny EfficientNet (random but fixed weights)."""
  import keras  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(0)
  path = str(tmp_path_factory.mktemp('teacher'))
  config = models.make_config('b0', 10, **TINY)
  model = models.build_from_config(config)
  model_dir_lib.write_config(path, model_dir_lib.ModelDirConfig(
      model=config, class_names=[str(i) for i in range(10)]))
  model_dir_lib.save_weights(path, model, 'ema')
  model_dir_lib.save_weights(path, model, 'raw')
  return path


# --- image_pixels: the header read ------------------------------------------------------------

@pytest.mark.parametrize('fmt,kwargs', [
    ('JPEG', {}), ('PNG', {}), ('GIF', {}), ('BMP', {}), ('WEBP', {'quality': 60}),
    ('WEBP', {'lossless': True})])
@pytest.mark.parametrize('height,width', [(37, 45), (1, 1), (300, 17)])
def test_image_pixels_is_height_times_width(fmt, kwargs, height, width):
  array = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
  encoded = _encode(array, fmt, **kwargs)
  assert int(preprocessing.image_pixels(encoded)) == height * width
  # Graph-safe: inside tf.function and tf.data, and the decoder agrees.
  assert int(tf.function(preprocessing.image_pixels)(tf.constant(encoded))) == height * width
  assert tuple(preprocessing.decode(encoded).shape) == (height, width, 3)


def test_image_pixels_of_real_images_and_other_formats(cifar_jpegs, huge_jpeg):
  jpegs = [open(p, 'rb').read() for _, p in cifar_jpegs[:5]]
  rgba_webp = _encode(np.zeros((20, 30, 4), np.uint8), 'WEBP')  # VP8X (extended) header
  gray_png = _encode(np.zeros((7, 9), np.uint8), 'PNG')
  ds = tf.data.Dataset.from_tensor_slices(jpegs + [rgba_webp, gray_png]).map(
      preprocessing.image_pixels)
  assert list(ds.as_numpy_iterator()) == [1024] * 5 + [600, 63]
  assert int(preprocessing.image_pixels(huge_jpeg.read_bytes())) == HUGE_PIXELS
  for unknown in (b'', b'abc', b'plain text, not an image at all', b'\xff\xd8 not a jpeg',
                  b'\x89PNG'):
    assert int(preprocessing.image_pixels(unknown)) == -1, unknown


def test_decode_refuses_before_decoding(huge_jpeg):
  small = _encode(np.zeros((40, 50, 3), np.uint8), 'PNG')
  assert preprocessing.decode(small, max_image_pixels=2000).shape == (40, 50, 3)
  with pytest.raises(tf.errors.InvalidArgumentError, match='max_image_pixels=1999'):
    preprocessing.decode(small, max_image_pixels=1999)
  assert preprocessing.decode(small, max_image_pixels=0).shape == (40, 50, 3)
  with pytest.raises(tf.errors.InvalidArgumentError, match=f'{HUGE_PIXELS}'):
    preprocessing.eval_preprocess(huge_jpeg.read_bytes(), 32, model_dir_lib.InputConvention())


# --- ns-label ---------------------------------------------------------------------------------

def test_ns_label_skips_and_counts_the_huge_image_in_bounded_memory(teacher, crawl_dir, tmp_path):
  out = tmp_path / 'pseudo'
  proc = _run([sys.executable, '-c', RSS_WRAPPER, sys.executable, '-m',
               'noisy_student_tf.cli.label', f'--model_dir={teacher}',
               f'--unlabeled=images:{crawl_dir}/*.jpg', f'--output_dir={out}', '--batch_size=16',
               '--num_shards=2'])
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  assert '50 images labeled' in proc.stdout and '1 too large skipped' in proc.stdout
  assert 'skipping too large image' in proc.stderr and '025_huge.jpg' in proc.stderr
  peak_kib = int(proc.stdout.split('CHILD_MAXRSS_KIB')[1].split()[0])
  print(f'ns-label peak RSS with the 20000 x 20000 JPEG: {peak_kib / 1024:.0f} MiB')
  assert peak_kib < 2 * 1024 * 1024, f'peak RSS {peak_kib / 1024:.0f} MiB'
  stats = json.loads((out / 'stats.json').read_text())
  assert stats['count'] == 50 and stats['too_large_skipped'] == 1
  assert stats['corrupt_skipped'] == 0
  assert stats['max_image_pixels'] == LIMIT == 64_000_000
  labeled = []
  for path in sorted(out.glob('*.tfrecord')):
    for raw in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
      ex = tf.train.Example.FromString(raw)
      labeled.append(ex.features.feature['image/source_id'].bytes_list.value[0].decode())
  assert sorted(labeled) == sorted(str(p) for p in crawl_dir.glob('*.jpg') if 'huge' not in p.name)


def test_the_limit_is_what_skips(cifar_jpegs, tmp_path):
  """The skip comes from the header check and its limit alone: 32 x 32 = 1024 pixels pass at
  max_image_pixels=1024 (and with no limit) and are all skipped as too large at 1023."""
  folder = tmp_path / 'small'
  folder.mkdir()
  for i, (_, path) in enumerate(cifar_jpegs[:12]):
    (folder / f'{i}.jpg').symlink_to(path)
  (folder / 'corrupt.jpg').write_bytes(b'\xff\xd8\xff truncated')
  source = sources.open_source(f'images:{folder}/*.jpg')
  for limit, kept, too_large in ((1024, 12, 0), (0, 12, 0), (None, 12, 0), (1023, 0, 12)):
    counter = pipeline.CorruptCounter()
    ds = pipeline.make_eval_dataset(source, batch_size=5, resolution=32,
                                    convention=model_dir_lib.InputConvention(), small_image=True,
                                    skip_corrupt=True, corrupt_counter=counter,
                                    max_image_pixels=limit)
    assert sum(int(b['label'].shape[0]) for b in ds) == kept, limit
    assert (counter.too_large, counter.count) == (too_large, too_large + 1), limit
  with pytest.raises(ValueError, match='max_image_pixels'):
    pipeline.make_eval_dataset(source, batch_size=5, resolution=32,
                               convention=model_dir_lib.InputConvention(), max_image_pixels=-1)
  with pytest.raises(ValueError, match='max_image_pixels'):
    label_lib.LabelConfig(model_dir='m', unlabeled='digits', output_dir='o',
                          max_image_pixels=-5).validate()


# --- a labeled run ----------------------------------------------------------------------------

@pytest.fixture(scope='module')
def labeled_dir(cifar_jpegs, huge_jpeg, tmp_path_factory):
  """folder: with two classes of 10 CIFAR JPEGs; the huge JPEG is one of class 'b'."""
  out = tmp_path_factory.mktemp('labeled')
  for cls, chunk in (('a', cifar_jpegs[:10]), ('b', cifar_jpegs[10:20])):
    (out / cls).mkdir()
    for i, (_, path) in enumerate(chunk):
      (out / cls / f'{i}.jpg').symlink_to(path)
  (out / 'b' / 'huge.jpg').symlink_to(huge_jpeg)
  return out


def test_labeled_pipeline_stops_naming_the_image(labeled_dir):
  source = sources.open_source(f'folder:{labeled_dir}')
  ds = pipeline.make_train_dataset(source, batch_size=32, resolution=32, num_classes=2,
                                   convention=model_dir_lib.InputConvention(), small_image=True,
                                   seed=0)
  with pytest.raises(tf.errors.InvalidArgumentError) as e:
    next(iter(ds))
  message = str(e.value)
  for part in ('image too large', 'huge.jpg', str(HUGE_PIXELS), f'max_image_pixels={LIMIT}',
               '--max_image_pixels'):
    assert part in message, (part, message[-1500:])
  # Skipped and counted like a corrupt image with skip_corrupt.
  counter = pipeline.CorruptCounter()
  ds = pipeline.make_train_dataset(source, batch_size=32, resolution=32, num_classes=2,
                                   convention=model_dir_lib.InputConvention(), small_image=True,
                                   seed=0, skip_corrupt=True, corrupt_counter=counter)
  images, _, _ = next(iter(ds))
  assert images.shape == (32, 32, 32, 3) and counter.too_large >= 1
  assert counter.count == counter.too_large


def test_ns_train_stops_before_training_naming_the_image(labeled_dir, tmp_path):
  model_dir = tmp_path / 'model'
  proc = _run([sys.executable, '-m', 'noisy_student_tf.cli.train', '--model=b0', '--width=0.25',
               '--depth=0.25', '--resolution=32', '--small_image', f'--labeled=folder:{labeled_dir}',
               f'--model_dir={model_dir}', '--train_steps=2', '--batch_size=32',
               '--checkpoint_every=1', '--progress=log'])
  assert proc.returncode != 0, proc.stdout[-2000:]
  err = proc.stderr
  assert 'huge.jpg' in err and str(HUGE_PIXELS) in err and f'max_image_pixels={LIMIT}' in err, \
      err[-3000:]
  assert not (model_dir / 'final').exists()


def test_the_limit_reaches_every_config():
  assert trainer.TrainConfig().max_image_pixels == LIMIT
  config = selftrain_pipeline.PipelineConfig(
      work_dir='/tmp/w', label=label_lib.LabelConfig(unlabeled='digits:test'),
      student={'train_steps': 1},
      teacher=trainer.TrainConfig(labeled='digits:train', eval_data='digits:test', train_steps=1,
                                  max_image_pixels=123456))
  assert config.label_config(0).max_image_pixels == 123456
  assert config.train_config(0).max_image_pixels == 123456
  assert config.train_config(1).max_image_pixels == 123456


# --- the exported signature -------------------------------------------------------------------

def test_serving_default_refuses_the_huge_image_then_answers(teacher, huge_jpeg, cifar_jpegs,
                                                             tmp_path):
  import resource  # pylint: disable=g-import-not-at-top
  export_dir = tmp_path / 'export'
  limit = 50_000_000
  proc = _run([sys.executable, '-m', 'noisy_student_tf.cli.export', f'--model_dir={teacher}',
               f'--export_dir={export_dir}', f'--max_image_pixels={limit}'])
  assert proc.returncode == 0, proc.stderr[-3000:]
  info = json.loads((export_dir / '1' / 'assets.extra' / saved_model.EXPORT_INFO).read_text())
  assert info['max_image_pixels'] == limit
  serve = tf.saved_model.load(str(export_dir / '1')).signatures['serving_default']
  huge = huge_jpeg.read_bytes()
  normal = [open(p, 'rb').read() for _, p in cifar_jpegs[:3]]

  before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  with pytest.raises(tf.errors.InvalidArgumentError) as e:
    serve(image_bytes=tf.constant([huge]))
  for part in ('too large', str(HUGE_PIXELS), f'max_image_pixels={limit}'):
    assert part in e.value.message, e.value.message
  with pytest.raises(tf.errors.InvalidArgumentError, match='batch positions.*1'):
    serve(image_bytes=tf.constant([normal[0], huge, normal[1]]))
  # Nothing of the 1.2 GB a decode would take was allocated.
  assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_kib < 600 * 1024

  # Stateless: the next request is answered, and equals the model's own prediction.
  out = serve(image_bytes=tf.constant(normal))
  model, config = model_dir_lib.load_model(teacher)
  images = tf.stack([preprocessing.eval_preprocess(e, 32, config.input, small_image=True)
                     for e in normal])
  expected = tf.nn.softmax(model(images, training=False)).numpy()
  np.testing.assert_allclose(out['probabilities'].numpy(), expected, atol=2e-5)
  assert out['top_k_classes'].numpy()[:, 0].tolist() == expected.argmax(1).tolist()


def test_export_config_rejects_a_negative_limit(teacher, tmp_path):
  with pytest.raises(ValueError, match='max_image_pixels'):
    saved_model.export(saved_model.ExportConfig(model_dir=teacher, export_dir=str(tmp_path),
                                                max_image_pixels=-1))
