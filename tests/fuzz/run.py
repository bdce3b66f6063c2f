"""Coverage-guided fuzzing of one target with atheris (libFuzzer for Python).

    python -m tests.fuzz.run TARGET [libFuzzer options...]      a campaign
    python -m tests.fuzz.run TARGET --merge [libFuzzer options...]  keep the new finds that add coverage

A campaign reads the seeds in tests/fuzz/corpus/TARGET and writes what it finds to a work directory
($FASTKV_FUZZ_DIR, default /tmp/fastkv-fuzz) as TARGET/corpus/ (new inputs) and TARGET/ (crash-* files,
each a reproducer: ``python -m tests.fuzz.run TARGET TARGET/crash-...``).  ``--merge`` minimizes the work
corpus into the seeds: only inputs that add coverage over the seeds are copied in.

Python code (fastkv, the harness, the twins) is instrumented for coverage; the Cython extensions are not,
so the fuzzer sees their behaviour only through the Python code around them.
"""

from __future__ import annotations

import os
import sys

import atheris

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__)
    target_name = sys.argv[1]
    options = sys.argv[2:]
    merge = "--merge" in options
    options = [o for o in options if o != "--merge"]

    with atheris.instrument_imports(include=["fastkv", "tests"]):
        from tests.fuzz.targets import SEEDS, TARGETS

    if target_name not in TARGETS:
        sys.exit(f"unknown target {target_name!r}; targets: {', '.join(TARGETS)}")
    target = TARGETS[target_name]
    seeds = os.path.join(SEEDS, target_name)
    work = os.path.join(os.environ.get("FASTKV_FUZZ_DIR", "/tmp/fastkv-fuzz"), target_name)
    work_corpus = os.path.join(work, "corpus")
    os.makedirs(work_corpus, exist_ok=True)
    os.makedirs(seeds, exist_ok=True)
    # libFuzzer starts argv[0] again for -merge, -fork and -jobs: make it a script that runs this target.
    again = os.path.join(work, "run-again.sh")
    script = f'#!/bin/sh\ncd "{ROOT}" && exec "{sys.executable}" -m tests.fuzz.run {target_name} "$@"\n'
    if not os.path.exists(again) or _read_text(again) != script:
        with open(again, "w") as f:
            f.write(script)
        os.chmod(again, 0o755)
    paths = [o for o in options if not o.startswith("-")]
    flags = [o for o in options if o.startswith("-")]
    flags.append(f"-artifact_prefix={work}/")
    if merge:
        argv = [again, "-merge=1", *flags, seeds, work_corpus]
    elif paths:
        argv = [again, *flags, *paths]  # run the given files or directories
    else:
        argv = [again, *flags, work_corpus, seeds]

    def one_input(data: bytes) -> None:
        target(data)

    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
