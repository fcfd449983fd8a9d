"""Benchmarks of the service against a bare FastAPI app on the same server options."""
