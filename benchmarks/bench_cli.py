"""How long a command takes to answer ``--help``, a bad flag or a bad config value.

Each case runs as ``python -m fcos_tf.<command> ...`` in a new process (what a user waits
for, interpreter start included), the cases in turn for ``--rounds`` rounds; the table gives
the median wall time and the exit status, next to ``python -c "import tensorflow"`` run the
same way. ``--repo`` times another checkout (e.g. a worktree of an older commit) with the
same cases.

Usage (from the repository root):

    python -m benchmarks.bench_cli
    python -m benchmarks.bench_cli --repo=/tmp/older_checkout --rounds=3
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks import common

# (label, arguments of `python`)
CASES = (
    ("python -c 'import tensorflow' (reference)", ["-c", "import tensorflow"]),
    ("fcos-train --help", ["-m", "fcos_tf.train", "--help"]),
    (
        "fcos-train, misspelt config key",
        ["-m", "fcos_tf.train", "--workdir=w", "--config.train.batch_sise=2"],
    ),
    (
        "fcos-train, unknown recipe",
        ["-m", "fcos_tf.train", "--workdir=w", "--config=no_such_recipe"],
    ),
    (
        "fcos-train, invalid value",
        ["-m", "fcos_tf.train", "--workdir=w", "--config.train.batch_size=-1"],
    ),
    ("fcos-predict --help", ["-m", "fcos_tf.predict", "--help"]),
    ("fcos-analyze --help", ["-m", "fcos_tf.analyze", "--help"]),
    ("fcos-export --help", ["-m", "fcos_tf.export", "--help"]),
)


def _time_case(arguments, repo, cwd):
    env = {**os.environ, "PYTHONPATH": repo}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # as a user runs the commands
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, *arguments], cwd=cwd, env=env, capture_output=True, text=True
    )
    return time.perf_counter() - start, result.returncode


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=os.path.dirname(os.path.dirname(__file__)) or ".")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="one round")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds = 1
    repo = os.path.abspath(args.repo)
    times = {label: [] for label, _ in CASES}
    statuses = {}
    with tempfile.TemporaryDirectory() as cwd:  # the commands write nothing on these paths
        for _ in range(args.rounds):
            for label, arguments in CASES:
                seconds, status = _time_case(arguments, repo, cwd)
                times[label].append(seconds)
                statuses[label] = status
    common.print_header(
        f"Time to answer, a new process per run, median of {args.rounds} (checkout {repo})"
    )
    common.print_table(
        ["case", "s (median)", "min", "max", "exit status"],
        [
            [label, statistics.median(t), min(t), max(t), statuses[label]]
            for label, t in times.items()
        ],
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
