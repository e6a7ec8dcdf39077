"""Prints a run's eval rows and final metric:
python experiments/print_results.py DIR."""

import json
import os
import sys


def main(root: str) -> None:
    with open(os.path.join(root, 'results.jsonl')) as f:
        rows = [json.loads(line) for line in f]
    for row in rows:
        print(f"env steps {row['env_steps']:>8}  step {row['step']:>7}  "
              f"return {row['return_mean']:8.1f} ± {row['return_std']:6.1f}  "
              f"actor sparsity {row['networks']['actor']['sparsity']:.3f}")
    with open(os.path.join(root, 'final_metric.json')) as f:
        print(f.read())


if __name__ == '__main__':
    main(sys.argv[1])
