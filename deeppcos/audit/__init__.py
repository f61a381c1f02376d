"""The leakage and shortcut audit of a cohort (exact and near-duplicate images, split straddling,
shortcut probes), its report, and the audit of one cohort against another."""
