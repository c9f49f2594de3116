"""GPU pretraining benchmark: fp32 vs bf16, model-only vs full step, transform throughput.

For a GPU machine (one command through the device tool):

    python benchmarks/gpu_pretrain.py --json gpu_pretrain.json

measures the width-32 U-Net on 64x64x32 cubes: pairs/s of the model step (ready tensors)
in fp32 and bf16 autocast at batch 6 and 32; the full ``genesis pretrain`` step (shard
DataLoader + transforms on the GPU + step) at the same settings; and the transforms' pairs/s
on the GPU. Goals: bf16 >= 2x fp32, full step <= 1.1x the model-only step.

``--smoke`` runs a tiny version (width 4, 32x32x16, batch 2 and 4) that also works on a
CPU, to check the script before spending GPU time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from pretrain_step import measure

FULL = {
    "width": 32,
    "shape": (64, 64, 32),
    "batches": (6, 32),
    "steps": 10,
    "rounds": 3,
    "workers": 4,
}
SMOKE = {
    "width": 4,
    "shape": (32, 32, 16),
    "batches": (2, 4),
    "steps": 2,
    "rounds": 1,
    "workers": 0,
}


def run(config: dict[str, Any], device: torch.device, folder: Path) -> dict[str, Any]:
    results: dict[str, Any] = {
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()},
        "runs": [],
    }
    for batch in config["batches"]:
        for amp in ("fp32", "bf16"):
            started = time.perf_counter()
            record = measure(
                config["shape"],
                config["width"],
                batch,
                config["steps"],
                config["workers"],
                device,
                amp,
                None,
                "all",
                folder,
                config["rounds"],
            )
            record["wall_s"] = time.perf_counter() - started
            results["runs"].append(record)
            print(
                f"batch {batch:3d} {amp}: model {record['model_pairs_per_s']:8.1f} pairs/s, "
                f"full {record['full_pairs_per_s']:8.1f} pairs/s, full/model "
                f"{record['full_over_model']:.3f}, transforms "
                f"{record['transform_pairs_per_s_per_cube']:.0f} (per cube) / "
                f"{record['transform_pairs_per_s_batched']:.0f} (batched) pairs/s",
                flush=True,
            )
            if device.type == "cuda":
                torch.cuda.empty_cache()
    by = {(r["batch"], r["amp"]): r for r in results["runs"]}
    results["bf16_over_fp32"] = {
        str(batch): by[(batch, "bf16")]["model_pairs_per_s"]
        / by[(batch, "fp32")]["model_pairs_per_s"]
        for batch in config["batches"]
    }
    results["device"] = results["runs"][0]["device"]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes; runs on a CPU")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, help="override the number of timed steps")
    parser.add_argument("--json", type=Path, default=Path("gpu_pretrain.json"))
    args = parser.parse_args(argv)
    config = dict(SMOKE if args.smoke else FULL)
    if args.steps:
        config["steps"] = args.steps
    device = torch.device(args.device)
    if device.type == "cpu" and not args.smoke:
        print("no GPU: use --smoke to check the script on a CPU", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as folder:
        results = run(config, device, Path(folder))
    results["torch"] = torch.__version__
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"bf16 / fp32 (model pairs/s): {results['bf16_over_fp32']}; wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
