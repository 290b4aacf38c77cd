"""The async worker (flowline.worker) and its faults: queued runs, leases, signals, real worker processes."""
