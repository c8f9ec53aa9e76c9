"""The learning side of stream-recs: the GRU4Rec next-item model, its training, checkpoints and
offline evaluation. The stream uses :func:`load_model` and the model's incremental API."""

from .checkpoint import CheckpointError, load_model, save_model
from .gru4rec import GRU4Rec

__all__ = ["CheckpointError", "GRU4Rec", "load_model", "save_model"]
