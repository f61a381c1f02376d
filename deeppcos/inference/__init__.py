"""Inference: a run folder loaded into a predictor, new patients read as the run's kind of cohort,
batch scoring (chunked, resumable, on Dask), micro-batching and the HTTP service."""
