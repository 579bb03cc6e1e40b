"""What the benches share: the throwaway site and its workers (site), a site's own
processes in their own groups (processes), the machine's readings (machine), the lab's
guests, block jobs and libvirt events (lab), waits on migrations (waits), figures (figures),
the rows the live pages' benches watch (live_rows) and bare libvirt, the inventory benches'
baseline (bare_libvirt). Not a bench itself (run_all.py runs only bench_*.py); imported as
`harness` with bench/ on the path."""
