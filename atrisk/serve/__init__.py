"""The service: DuckDB store (store.py), background jobs (jobs.py), FastAPI app (api.py)."""
