"""Names a user chooses from on the command line, kept free of heavy imports so the CLI can
list them in ``--help`` without loading PyTorch. Each is checked where it is used."""

from __future__ import annotations

PRESETS = ("tiny", "demo", "paper")  # training presets (abdus.training.presets)
