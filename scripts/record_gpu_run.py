"""Write the record of one scripts/gpu_check.sh run as JSON.

GPU name, torch/CUDA versions, commit and date, plus each stage's exit code
and time and the test counts from pytest's JUnit XML.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import xml.etree.ElementTree as ET


def commit() -> str:
    env = os.environ.get("PYKERNELS_COMMIT")
    if env:
        return env
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], text=True, stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment() -> dict:
    import torch

    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "commit": commit(),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env.update(gpu=p.name, sm_count=p.multi_processor_count, capability=f"{p.major}.{p.minor}",
                   memory_gib=round(p.total_memory / 2**30, 1))
    else:
        env["gpu"] = None
    return env


def junit_counts(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    keys = ("tests", "failures", "errors", "skipped")
    counts = {k: sum(int(s.get(k, 0)) for s in suites) for k in keys}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    failed = [f"{c.get('classname')}::{c.get('name')}" for s in suites for c in s.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    counts["failed_tests"] = failed[:200]
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--stages", default="{}")
    ap.add_argument("--junit", default="")
    a = ap.parse_args()
    record = environment()
    record["stages"] = json.loads(a.stages)
    record["tests"] = junit_counts(a.junit)
    with open(a.out, "w") as f:
        json.dump(record, f, indent=1)
    print(json.dumps({k: record[k] for k in ("gpu", "torch", "cuda", "commit", "date")}))
    print("tests:", {k: v for k, v in record["tests"].items() if k != "failed_tests"})


if __name__ == "__main__":
    main()
