"""``python -m bench [NAME ...] [--quick] [--device auto|cpu|cuda] [--results-dir DIR]``."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback

from bench import common, discover


def main(argv: list[str] | None = None) -> int:
    benchmarks = discover()
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run the minidml benchmarks; each writes bench/results/<name>.json.")
    parser.add_argument("names", nargs="*", metavar="NAME", choices=[[], *benchmarks],
                        help=f"benchmarks to run (default: all of {', '.join(benchmarks)})")
    common.add_common_options(parser)
    args = parser.parse_args(argv)
    failed = []
    t0 = time.perf_counter()
    for name in args.names or benchmarks:
        common.log(f"== {name}{' (quick)' if args.quick else ''}")
        try:
            start = time.perf_counter()
            module = importlib.import_module(f"bench.{name}")
            result = module.run(args)
            result["wall_seconds"] = round(time.perf_counter() - start, 1)
        except common.BenchError as e:
            common.log(f"{name}: {e}")
            failed.append(name)
            continue
        except Exception:  # noqa: BLE001 - report it, run the others, fail at the end
            traceback.print_exc()
            failed.append(name)
            continue
        path = common.write_result(args.results_dir, name, result)
        print(module.report(result))
        print(f"  -> {path}", flush=True)
    common.log(f"== done in {time.perf_counter() - t0:.0f}s"
               + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
