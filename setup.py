"""Installs noisy-student-tf: the package, its binaries (ns-*) and its dependencies."""

from setuptools import find_packages, setup

ROBUSTNESS = ['opencv-python-headless>=4.8', 'scikit-image>=0.22']
# ns-label / ns-filter --runner=beam (selftrain/beam/): 2.77.0 resolves beside tensorflow 2.21,
# keras 3 and tensorflow-serving-api 2.21 (tfx-bsl does not); google-crc32c: fast TFRecord CRCs.
BEAM = ['apache-beam[tfrecord]==2.77.0', 'google-crc32c>=1.5']
BINARIES = ['train', 'label', 'filter', 'eval', 'export', 'pipeline']

setup(
    name='noisy-student-tf',
    version='0.1.0',
    description='Noisy Student self-training with EfficientNet in Keras 3 / TensorFlow',
    long_description=open('README.md').read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['noisy_student_tf', 'noisy_student_tf.*']),
    python_requires='>=3.11',
    install_requires=[
        'tensorflow==2.21.*',
        'keras==3.15.*',
        'keras-cv==0.9.0',
        'tensorflow-datasets>=4.9',
        'tensorboard>=2.21',
        'absl-py>=2.0',
        'tqdm>=4.66',  # progress bars of the long stages (noisy_student_tf/progress.py)
        'numpy>=1.26',
        'pillow>=10',
        'matplotlib>=3.8',
        'scikit-learn>=1.4',  # the bundled digits of the offline demo
        'tensorflow-serving-api==2.21.*',  # PredictionLog protos of the warm-up file
    ],
    extras_require={
        # ImageNet-C corruption functions of tensorflow-datasets (ns-eval --suite=corruptions).
        'robustness': ROBUSTNESS,
        'beam': BEAM,
        # jax: the backend-independence tests of the models; BEAM: tests/test_beam.py.
        'test': ['pytest>=8', 'pytest-xdist>=3.8', 'psutil>=5.9', 'jax>=0.4'] + ROBUSTNESS + BEAM,
        'demo': [],
    },
    entry_points={'console_scripts': [
        f'ns-{b}=noisy_student_tf.cli.{b}:run' for b in BINARIES]},
)
