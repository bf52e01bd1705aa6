"""ReMix reinforcement-finetuning engine: rollout, rewards, replay, losses and the training loop.

Submodules are imported explicitly (``from remix_engine.losses import ...``); this package file stays
import-light so that ``remix_engine.config`` can be loaded by the HTTP API without torch.
"""
