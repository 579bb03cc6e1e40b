"""bench_ready_to_dom.py's parts: the browser and its page (page), the samples (runs), the report."""
