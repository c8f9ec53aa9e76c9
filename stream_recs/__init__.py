"""stream-recs: a sequence-aware streaming recommender (Kafka + Faust + a GRU next-item model)."""

__version__ = "0.1.0"
