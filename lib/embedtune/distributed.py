"""Training on several devices, outside the notebook kernel: torchrun and DDP.

With ``train.devices: N`` (N > 1) 03_train writes a job folder (the training dataset, the
settings) and runs ``torchrun --standalone --nproc_per_node N -m embedtune.distributed JOB``:
one process per GPU (NCCL), or, without GPUs, N CPU processes (gloo). The Trainer wraps the
model in DistributedDataParallel; the in-batch losses gather every process's embeddings
(``gather_across_devices``), so each query is ranked against the whole global batch of
``N x train.batch_size`` passages. Rank 0 saves the model (atomically) and the training log;
every process's output is streamed, prefixed with its rank, into the notebook as it comes.

Example:
    >>> job = write_job(folder, train_ds, cfg, model_name="sentence-transformers/all-MiniLM-L6-v2",
    ...                 out_dir=run/"model", seed=42, device="cpu")
    >>> launch(job, devices=2)           # returns when every process has finished
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable


class DistributedError(RuntimeError):
    """The distributed training run failed; the message holds the end of its log."""


def write_job(folder: Path, train_ds, cfg, *, model_name: str, out_dir: Path, seed: int, device: str,
              max_seq_length: int | None = None, guide: str | None = None) -> Path:
    """Save what the worker processes need: the training dataset and the settings."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    train_ds.save_to_disk(str(folder / "dataset"))
    (folder / "job.json").write_text(json.dumps({
        "model": model_name, "train": asdict(cfg), "out_dir": str(out_dir), "seed": seed, "device": device,
        "max_seq_length": max_seq_length, "guide": guide}, default=list))
    return folder


def launch(job: Path, devices: int, stream: Callable[[str], None] = print, timeout: float | None = None) -> dict:
    """Run the job on ``devices`` processes with torchrun; stream their output line by line.

    Returns:
        ``{"seconds", "processes", "log"}`` (the last lines of output).

    Raises:
        DistributedError: a process failed (with the end of the log).
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={devices}",
               "-m", "embedtune.distributed", str(job)]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // devices))),
               PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    start = time.perf_counter()
    tail: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) as proc:
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail = (tail + [line])[-40:]
            stream(line)
        code = proc.wait(timeout=timeout)
    (Path(job) / "launch.log").write_text("\n".join(tail))
    if code != 0:
        raise DistributedError(f"torchrun with {devices} processes failed (exit {code}):\n" + "\n".join(tail[-15:]))
    return {"seconds": time.perf_counter() - start, "processes": devices, "log": tail}


def fine_tune_distributed(train_ds, evaluator, cfg, out_dir: Path, seed: int, *, model_name: str, device: str,
                          max_seq_length: int | None = None, guide: str | None = None,
                          dev_before: dict | None = None, stream: Callable[[str], None] = print):
    """:func:`embedtune.train.fine_tune` on ``cfg.devices`` processes; the dev evaluator scores
    the trained model once, here (the dev curve is step 0 and the end).

    Returns:
        (the TrainResult, the trained model).
    """
    from embedtune.models import load_model
    from embedtune.train import TrainResult

    out_dir = Path(out_dir)
    job = write_job(out_dir.parent / f".{out_dir.name}.job", train_ds, cfg, model_name=model_name, out_dir=out_dir,
                    seed=seed, device=device, max_seq_length=max_seq_length, guide=guide)
    launch(job, cfg.devices, stream)
    done = json.loads((job / "result.json").read_text())
    model = load_model(str(out_dir), device)
    after = evaluator(model, steps=done["steps"]) if evaluator is not None else {}
    log = json.loads((out_dir / "training_log.json").read_text())
    history = log["log_history"] + ([{"step": done["steps"], **{f"eval_{k}": v for k, v in after.items()}}]
                                    if after else [])
    log.update(log_history=history, dev_before=dev_before or {})
    (out_dir / "training_log.json").write_text(json.dumps(log))
    best = after.get(evaluator.primary_metric) if evaluator is not None else None
    return TrainResult(out_dir, done["seconds"], done["steps"], history, dev_before or {}, best, None,
                       done["precision"]), model


def main(job: str) -> None:
    """One worker process (started by torchrun): train on its share of every batch."""
    from datasets import load_from_disk

    from embedtune.config import TrainConfig, build
    from embedtune.models import load_model
    from embedtune.train import fine_tune

    spec = json.loads((Path(job) / "job.json").read_text())
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = spec["device"]
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    cfg = build(TrainConfig, spec["train"], prefix="train.")
    model = load_model(spec["model"], device, spec["max_seq_length"])
    guide = load_model(spec["guide"], device) if spec.get("guide") else None
    dataset = load_from_disk(str(Path(job) / "dataset"))
    print(f"rank {rank}/{world}: {len(dataset)} training examples on {device}", flush=True)
    result = fine_tune(model, dataset, None, cfg, Path(spec["out_dir"]), spec["seed"], guide=guide, dev_before={})
    print(f"rank {rank}/{world}: {result.steps} steps in {result.seconds:.1f} s", flush=True)
    if rank == 0:
        (Path(job) / "result.json").write_text(json.dumps({"seconds": result.seconds, "steps": result.steps,
                                                           "processes": world, "precision": result.precision}))


if __name__ == "__main__":
    main(sys.argv[1])
