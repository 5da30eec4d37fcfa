"""Read-only checks: plain functions that return plain results, and the runner that schedules them."""
