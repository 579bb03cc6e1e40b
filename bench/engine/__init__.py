"""bench_engine.py's measurements, one module each: start ([1] request → block job started),
takeover ([2] after kill -9), concurrent ([3]), full_copy ([4] bench_migration.py)."""
