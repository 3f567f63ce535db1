"""A training process for the DDP and kill-resume tests (run as a script, not collected).

python train_worker.py DATA RUN --stage1 N --stage2 M [--cache DIR] [--dump FILE]
    [--data-on-device auto|on|off]

Trains the tiny preset on the CPU into RUN on the dataset DATA (folder with manifest.json), the
way ``abdus train`` does (``build_trainer``), with the sample cache in DIR. Under torchrun-style
environment variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) it joins the
process group like ``abdus train`` does. ``--dump FILE`` saves this rank's model and
discriminator state dicts after training (rank 1 writes no run files, so this is how a test
sees its parameters). ``--data-on-device`` sets ``TrainConfig.data_on_device``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch
from training_synthetic import tiny_config, with_epochs

from abdus.training.distributed import cleanup, init_distributed
from abdus.training.trainer import build_trainer, check_run_dir


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("run", type=Path)
    parser.add_argument("--stage1", type=int, default=1)
    parser.add_argument("--stage2", type=int, default=1)
    parser.add_argument("--cache", default=None)
    parser.add_argument("--dump", type=Path, default=None)
    parser.add_argument("--data-on-device", default="auto")
    args = parser.parse_args()

    config = tiny_config(cache_dir=args.cache, data_on_device=args.data_on_device)
    config = with_epochs(config, args.stage1, args.stage2)
    check_run_dir(args.run, resume=False)
    ctx = init_distributed(config.device)
    try:
        trainer = build_trainer(args.data, args.run, config, ctx)
        trainer.run()
        trainer.finish()
        if args.dump is not None:
            d = trainer.discriminator
            state = {"model": trainer.model.state_dict(), "d": d.state_dict() if d else None}
            torch.save(state, args.dump)
    finally:
        cleanup(ctx)


if __name__ == "__main__":
    main()
