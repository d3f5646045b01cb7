"""Robustness metrics (mCE, relative mCE, mFR, ImageNet-A top-1, ECE) against hand-computed values
on small synthetic prediction tables."""

import numpy as np
import pytest

from noisy_student_tf.evaluate import calibration, robustness as rb


def test_constants_match_the_reference_tables():
  assert len(rb.IMAGENET_C_CORRUPTIONS) == 15 and len(rb.ALEXNET_ERR) == 15
  assert rb.ALEXNET_ERR['gaussian_noise'] == 0.886428 and rb.ALEXNET_ERR['jpeg_compression'] == 0.6065
  assert len(rb.IMAGENET_P_PERTURBATIONS) == 10
  assert rb.ALEXNET_FP['gaussian_noise'] == 0.2365 and rb.ALEXNET_FP['scale'] == 0.2353
  assert len(rb.IMAGENET_A_INDICES) == 200 and len(set(rb.IMAGENET_A_INDICES)) == 200
  assert list(rb.IMAGENET_A_INDICES) == sorted(rb.IMAGENET_A_INDICES)
  assert rb.IMAGENET_A_INDICES[0] == 6 and rb.IMAGENET_A_INDICES[-1] == 988


def test_mce_against_alexnet():
  # Every corruption's mean error is k * AlexNet's with k cycling 0.2, 0.4, 0.6 -> CE 20, 40, 60.
  ks = [0.2, 0.4, 0.6] * 5
  errors = {c: [k * rb.ALEXNET_ERR[c]] * 5 for c, k in zip(rb.IMAGENET_C_CORRUPTIONS, ks)}
  ces = rb.corruption_errors(errors)
  assert ces['gaussian_noise'] == pytest.approx(20.0)
  assert ces['shot_noise'] == pytest.approx(40.0)
  assert rb.mean_corruption_error(errors) == pytest.approx(40.0)
  # Unequal severities: mean(0.1..0.5) = 0.3; 100 * 0.3 / 0.886428 = 33.84370...
  errors['gaussian_noise'] = [0.1, 0.2, 0.3, 0.4, 0.5]
  assert rb.corruption_errors(errors)['gaussian_noise'] == pytest.approx(33.843696, abs=1e-5)
  assert rb.mean_corruption_error(errors) == pytest.approx((33.843696 - 20 + 600) / 15, abs=1e-5)


def test_mce_needs_all_15_and_known_names():
  with pytest.raises(ValueError, match='mCE needs errors'):
    rb.mean_corruption_error({'gaussian_noise': [0.5] * 5})
  with pytest.raises(ValueError, match="no reference error for corruption 'rain'"):
    rb.corruption_errors({'rain': [0.5]})


def test_relative_mce_against_alexnet_and_a_baseline():
  # brightness: model mean 0.3, clean 0.2; AlexNet 0.564592, clean 0.4348:
  # 100 * (0.3 - 0.2) / (0.564592 - 0.4348) = 100 * 0.1 / 0.129792 = 77.04635...
  errs = {'brightness': [0.2, 0.25, 0.3, 0.35, 0.4], 'contrast': [0.5] * 5}
  rel = rb.relative_corruption_errors(errs, clean_error=0.2)
  assert rel['brightness'] == pytest.approx(77.046351, abs=1e-5)
  # contrast: 100 * (0.5 - 0.2) / (0.853204 - 0.4348) = 30 / 0.418404 = 71.70103...
  assert rel['contrast'] == pytest.approx(71.701035, abs=1e-5)
  assert rb.relative_mean_corruption_error(errs, 0.2, corruptions=None) == pytest.approx(
      (77.046351 + 71.701035) / 2, abs=1e-5)
  # A baseline given per severity (teacher): errors 0.4 on average, clean 0.3.
  teacher = {'brightness': [0.3, 0.35, 0.4, 0.45, 0.5], 'contrast': [0.6] * 5}
  ce = rb.corruption_errors(errs, teacher)  # 100 * 0.3 / 0.4 = 75 ; 100 * 0.5 / 0.6 = 83.33
  assert ce == pytest.approx({'brightness': 75.0, 'contrast': 250 / 3})
  rel = rb.relative_corruption_errors(errs, 0.2, teacher, reference_clean_error=0.3)
  assert rel == pytest.approx({'brightness': 100.0, 'contrast': 100.0})  # 0.1/0.1, 0.3/0.3


def test_flip_probability_noise_vs_temporal():
  seqs = np.array([[1, 1, 2, 1], [3, 4, 4, 3]])
  # noise: compare with frame 1: (0+1+0)/3 and (1+1+0)/3 -> mean 1/2
  assert rb.flip_probability(seqs, noise=True) == pytest.approx(0.5)
  # temporal: consecutive frames: (0+1+1)/3 and (1+0+1)/3 -> 2/3
  assert rb.flip_probability(seqs, noise=False) == pytest.approx(2 / 3)
  # sequences of unequal length: mean of per-sequence fractions (1/1 and 0/2)
  assert rb.flip_probability([[1, 2], [5, 5, 5]], noise=False) == pytest.approx(0.5)
  assert rb.is_noise_perturbation('speckle_noise') and not rb.is_noise_perturbation('rotate')


def test_mfr():
  fps = {p: 0.5 * rb.ALEXNET_FP[p] for p in rb.IMAGENET_P_PERTURBATIONS}
  assert rb.mean_flip_rate(fps) == pytest.approx(50.0)
  # gaussian_noise 0.5 / 0.2365 = 211.4165 ; rotate (1/3) / 0.1310 = 254.4529
  two = {'gaussian_noise': 0.5, 'rotate': 1 / 3}
  assert rb.flip_rates(two) == pytest.approx({'gaussian_noise': 211.416490,
                                               'rotate': 254.452926}, abs=1e-5)
  assert rb.mean_flip_rate(two, perturbations=None) == pytest.approx(232.934708, abs=1e-5)
  with pytest.raises(ValueError, match='mFR needs flip probabilities'):
    rb.mean_flip_rate(two)


def test_imagenet_a_accuracy_restricts_to_200_classes():
  logits = np.zeros((3, 1000))
  logits[0, [0, 6]] = [9.0, 5.0]    # global argmax 0 is not an ImageNet-A class; 6 (A class 0) is
  logits[1, [999, 11]] = [9.0, 4.0]  # -> 11 = A class 1, correct
  logits[2, [988, 13]] = [3.0, 2.0]  # -> 988 = A class 199, label 13 (A class 2): wrong
  labels_1k = np.array([6, 11, 13])
  assert rb.imagenet_a_accuracy(logits, labels_1k) == pytest.approx(2 / 3)
  assert rb.imagenet_a_accuracy(logits, [0, 1, 2], label_space='200') == pytest.approx(2 / 3)
  assert list(rb.imagenet_a_predictions(logits)) == [0, 1, 199]
  assert rb.top1_error(logits, labels_1k) == 1.0  # unrestricted 1000-way: no row is right
  with pytest.raises(ValueError, match=r'labels \[0\] are not among the 200'):
    rb.imagenet_a_accuracy(logits, [0, 11, 13])
  with pytest.raises(ValueError, match='1000-way'):
    rb.imagenet_a_accuracy(np.zeros((2, 10)), [6, 11])


def test_expected_calibration_error():
  probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
  labels = np.array([0, 1, 0, 1])  # correct, wrong, correct, correct
  # 10 bins: each row alone: (|1-.9| + |0-.8| + |1-.6| + |1-.7|) / 4 = 0.4
  assert calibration.expected_calibration_error(probs, labels, 10) == pytest.approx(0.4)
  # 1 bin: accuracy 3/4, mean confidence 3/4 -> 0
  assert calibration.expected_calibration_error(probs, labels, 1) == pytest.approx(0.0)
  # 5 bins: (.8,1]: {.9 ok} -> .1 ; (.6,.8]: {.8 wrong, .7 ok} -> |.5-.75| ; (.4,.6]: {.6 ok} -> .4
  # = (1*.1 + 2*.25 + 1*.4) / 4 = 0.25
  assert calibration.expected_calibration_error(probs, labels, 5) == pytest.approx(0.25)
  logits = np.log(probs)
  assert calibration.expected_calibration_error_from_logits(logits, labels, 5) == pytest.approx(0.25)
  with pytest.raises(ValueError, match='num_bins'):
    calibration.expected_calibration_error(probs, labels, 0)
