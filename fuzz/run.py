"""Run the fuzz targets of fuzz/targets.py.

    python fuzz/run.py                      # every target, 60 s each
    python fuzz/run.py --target mail --seconds 600
    python fuzz/run.py --list

With atheris installed (`pip install atheris`; wheels exist for CPython
3.11 on x86-64 Linux) each target runs coverage-guided in its own process
(libFuzzer, `-max_total_time`); a crash leaves `crash-<sha1>` in the working
directory and a non-zero exit.  Without atheris a seeded mutation loop over
the same corpus runs in-process, so `make fuzz` works anywhere.  Either way
the number of inputs tried per target is printed (docs/reliability.md
quotes it).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import targets  # noqa: E402

TOKENS = [b"\r\n", b"\x02", b"\x03", b"\x04", b"+++", b"AT", b"{", b"}", b'"', b":", b"[",
          b"]", b"=?utf-8?b?", b"\x1b$B", b"Subject: ", b"Content-Type: application/json\r\n",
          b"\xff", b"\x00\x00", b"null", b"1e999", b"\\u0000"]  # fmt: skip


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        at = rng.randint(0, max(0, len(out) - 1))
        op = rng.randrange(6)
        if op == 0 and out:
            out[at] = rng.randrange(256)
        elif op == 1:
            del out[at : at + rng.randint(1, 64)]
        elif op == 2:
            out[at:at] = rng.randbytes(rng.randint(1, 32))
        elif op == 3:
            out[at:at] = out[at : at + rng.randint(1, 128)]
        elif op == 4:
            del out[at:]
        else:
            out[at:at] = rng.choice(TOKENS)
    return bytes(out[: 1 << 20])


def plain(name: str, seconds: float, seed: int) -> int:
    """Mutation loop without coverage feedback; returns inputs tried."""
    target = targets.TARGETS[name]
    rng = random.Random(seed)
    pool = targets.corpus(name)
    deadline = time.monotonic() + seconds
    tried = 0
    while time.monotonic() < deadline:
        data = mutate(rng, rng.choice(pool))
        try:
            target(data)
        except Exception:
            path = Path(f"crash-{name}-{seed}-{tried}")
            path.write_bytes(data)
            traceback.print_exc()
            print(f"{name}: finding after {tried} inputs, saved as {path}", file=sys.stderr)
            raise SystemExit(1) from None
        tried += 1
        if tried % 200 == 0 and rng.random() < 0.05:
            pool.append(data)  # keep a few mutants as seeds
    return tried


def with_atheris(name: str, seconds: float) -> int:
    import atheris  # type: ignore[import-not-found]

    # Coverage feedback needs the Python code instrumented (bytecode hooks).
    atheris.instrument_all()
    default = HERE.parent / "test-artifacts" / "fuzz-corpus"
    corpus_dir = Path(os.environ.get("FUZZ_CORPUS", default)) / name
    corpus_dir.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(targets.corpus(name)):
        (corpus_dir / f"seed-{i}").write_bytes(seed)
    target = targets.TARGETS[name]
    tried = 0

    def one(data: bytes) -> None:
        nonlocal tried
        tried += 1
        target(data)

    args = [sys.argv[0], f"-max_total_time={int(seconds)}", "-max_len=65536", str(corpus_dir)]
    atheris.Setup(args, one)
    with contextlib.suppress(SystemExit):
        atheris.Fuzz()
    return tried


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=sorted(targets.TARGETS), action="append")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--plain", action="store_true", help="no atheris even if installed")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.list:
        print("\n".join(sorted(targets.TARGETS)))
        return 0
    names = opts.target or sorted(targets.TARGETS)
    try:
        import atheris  # type: ignore[import-not-found]  # noqa: F401

        have_atheris = not opts.plain
    except ImportError:
        have_atheris = False
    if opts.child:
        tried = with_atheris(names[0], opts.seconds)
        print(f"{names[0]}: {tried} inputs (atheris)")
        return 0
    status = 0
    for name in names:
        if have_atheris:
            # libFuzzer ends the process: one child per target.
            done = subprocess.run(
                [sys.executable, __file__, "--child", "--target", name,
                 "--seconds", str(opts.seconds)],
                check=False,
            )  # fmt: skip
            status = status or done.returncode
        else:
            tried = plain(name, opts.seconds, opts.seed)
            print(f"{name}: {tried} inputs, no finding (mutation loop)")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
