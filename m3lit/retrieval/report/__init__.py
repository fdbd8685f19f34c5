"""Reports of an evaluation: tables, the chart, results files with their provenance, paired significance."""
