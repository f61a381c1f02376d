"""Run folders and what travels with them: the layout (file names), the atomic writer and the
run record, the reader, typed metric records, safe model files, the reviewers' feedback log and
CSVs without live formulas."""
