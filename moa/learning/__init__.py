"""What moa learns and keeps: the example store, specialists trained on embeddings, confidence
calibration, and the labelled data they learn from."""

__all__: list[str] = []
