"""The only package that imports Ray: runtime, roles over stored data, the data plan, the retrain job, ingest actors."""
