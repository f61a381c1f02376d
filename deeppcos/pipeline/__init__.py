"""The pipeline: a run config's training (grouped cross-validation, refit, fusion, severity) into a
run folder, and the scoring of a run's locked test part."""
