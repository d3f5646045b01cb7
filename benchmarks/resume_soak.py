"""Resume soak: SIGKILL ns-train at random moments N times, rerun the same command each time, and
check that the run ends at exactly the requested step with the learning rate on schedule.

  python benchmarks/resume_soak.py --kills=10 --out=/tmp/resume_soak

Trains the tiny small-image B0 on the bundled digits (offline).  Writes OUT/resume_soak.json and
OUT/resume_soak.md (one row per kill: the step of the last checkpoint before it, the step the next
run resumed from) and prints the table.
"""

import argparse
import json
import os
import pathlib
import random
import re
import signal
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def _latest_step(model_dir):
  state = pathlib.Path(model_dir, 'ckpt', 'checkpoint')
  if not state.exists():
    return None
  m = re.search(r'^model_checkpoint_path: "ckpt-(\d+)"', state.read_text(), re.M)
  return int(m.group(1)) if m else None


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--kills', type=int, default=10, help='how many times to SIGKILL the run')
  parser.add_argument('--train_steps', type=int, default=300, help='length of the run')
  parser.add_argument('--checkpoint_every', type=int, default=10, help='steps between checkpoints')
  parser.add_argument('--max_delay', type=float, default=4.0,
                      help='kill at a random time up to this many seconds after new progress')
  parser.add_argument('--seed', type=int, default=0, help='seed of the kill times')
  parser.add_argument('--out', default='/tmp/resume_soak', help='output folder')
  args = parser.parse_args()
  rng = random.Random(args.seed)
  out = pathlib.Path(args.out)
  model_dir = out / 'model'
  if model_dir.exists():
    import shutil
    shutil.rmtree(model_dir)
  out.mkdir(parents=True, exist_ok=True)
  cmd = [sys.executable, '-m', 'noisy_student_tf.cli.train', '--model=b0', '--width=0.25',
         '--depth=0.25', '--resolution=32', '--small_image', '--labeled=digits:train',
         f'--model_dir={model_dir}', f'--train_steps={args.train_steps}', '--batch_size=32',
         f'--checkpoint_every={args.checkpoint_every}', '--log_every=5', '--warmup_epochs=1',
         '--lr_decay_epochs=0.5', '--progress=log', '--steps_per_execution=5']
  env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2'}
  rows, start = [], time.time()
  for kill in range(args.kills):
    before = _latest_step(model_dir)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # wait for new progress (a checkpoint later than the one we resumed from), then a random delay
    while proc.poll() is None and _latest_step(model_dir) == before:
      time.sleep(0.1)
    delay = rng.uniform(0, args.max_delay)
    time.sleep(delay)
    if proc.poll() is not None:
      print(f'run finished before kill {kill + 1}; use a longer --train_steps', file=sys.stderr)
      break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rows.append({'kill': kill + 1, 'resumed_from': before, 'checkpoint_at_kill': _latest_step(model_dir),
                 'delay_s': round(delay, 2)})
    print(rows[-1], flush=True)
  final = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
  if final.returncode:
    sys.exit(f'final run failed:\n{final.stderr[-3000:]}')
  result = json.loads((model_dir / 'train_result.json').read_text())
  effective = json.loads((model_dir / 'config.json').read_text())['training']['effective']
  sys.path.insert(0, str(REPO))
  from noisy_student_tf.train.optim import LearningRate
  schedule = LearningRate(base=effective['peak_learning_rate'], total_steps=args.train_steps,
                          warmup_steps=effective['warmup_steps'], decay_steps=effective['decay_steps'])
  logged = {}
  for line in (model_dir / 'train_log.jsonl').read_text().splitlines():
    r = json.loads(line)
    if r['kind'] == 'train':
      logged.setdefault(r['step'], []).append(r['learning_rate'])
  lr_errors = max(abs(lr - schedule.value(s)) for s, lrs in logged.items() for lr in lrs)
  summary = {
      'kills': len(rows), 'final_step': result['step'], 'requested_steps': args.train_steps,
      'final_resumed_from': result['resumed_from'],
      'final_learning_rate': result.get('learning_rate'),
      'expected_final_learning_rate': schedule.value(args.train_steps),
      'max_logged_lr_error': lr_errors,
      'all_log_steps_present': sorted(logged) == list(range(5, args.train_steps + 1, 5)),
      'wall_seconds': round(time.time() - start, 1), 'rows': rows}
  summary['ok'] = (summary['final_step'] == args.train_steps and lr_errors < 1e-7
                   and summary['all_log_steps_present'])
  (out / 'resume_soak.json').write_text(json.dumps(summary, indent=2))
  lines = ['| kill | resumed from step | last checkpoint at kill | delay after progress (s) |',
           '|---|---|---|---|']
  lines += [f'| {r["kill"]} | {r["resumed_from"] or 0} | {r["checkpoint_at_kill"]} | {r["delay_s"]} |'
            for r in rows]
  lines += ['', f'final run: resumed from {result["resumed_from"]}, stopped at step '
            f'{result["step"]} of {args.train_steps}; final learning rate '
            f'{summary["final_learning_rate"]} (schedule: {summary["expected_final_learning_rate"]}); '
            f'max |logged lr - schedule| = {lr_errors:.2e}; every log step present: '
            f'{summary["all_log_steps_present"]}; OK: {summary["ok"]}; wall {summary["wall_seconds"]} s']
  (out / 'resume_soak.md').write_text('\n'.join(lines) + '\n')
  print('\n'.join(lines))
  sys.exit(0 if summary['ok'] else 1)


if __name__ == '__main__':
  main()
