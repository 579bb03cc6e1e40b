"""What the lab benches share: the throwaway site and its workers (site), the machine's
readings (machine), the lab's guests and block jobs (lab), waits on migrations (waits) and
figures (figures). Not a bench itself (run_all.py runs only bench_*.py); imported as
`harness` with bench/ on the path."""
