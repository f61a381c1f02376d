"""Clinical knowledge: the feature catalog (units, LOINC codes, ranges), unit conversion, the
diagnostic criteria and the plausible ranges, each from ../shared/clinical-reference.md."""
