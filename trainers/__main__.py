"""``python -m distilld.trainers run SPEC.json``: run one job with no daemon around it.

Exit status 0 when the job succeeded, 1 when it failed (``result.json`` in the
job's output dir says why), 2 on a bad command line or spec.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pydantic import ValidationError
from transformers.utils import logging as hf_logging

from distilld.trainers.job_spec import JobSpec
from distilld.trainers.run_job import run_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distilld.trainers", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the job described by a JobSpec JSON file")
    run.add_argument("spec", type=Path, help="path to the JobSpec JSON file")
    sub.add_parser("schema", help="print the JobSpec JSON schema")
    pair = sub.add_parser("pair", help="build (or find) the cached MiniLM teacher / 2-layer student pair")
    pair.add_argument(
        "--cache-dir", type=Path, default=None, help="cache folder (default: $DISTILLD_PAIR_CACHE)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # weight-loading bars would bury the job's own progress bar and the error in the stderr tail
    hf_logging.disable_progress_bar()
    if args.command == "schema":
        print(json.dumps(JobSpec.model_json_schema(), indent=2))
        return 0
    if args.command == "pair":
        from distilld.trainers.pair_bootstrap import bootstrap_pair

        found = bootstrap_pair(args.cache_dir)
        print(json.dumps({"cache_dir": str(found.root), **found.info}, indent=2))
        return 0
    try:
        spec = JobSpec.read(args.spec)
    except (OSError, ValidationError) as err:
        print(f"cannot read job spec {args.spec}: {err}", file=sys.stderr)
        return 2
    result = run_job(spec)
    if result.status != "succeeded":
        print(f"job {spec.job_id} failed: {result.error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
