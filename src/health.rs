//! HTTP health checks: one probe, and the wait for `healthy_threshold` consecutive passes.
