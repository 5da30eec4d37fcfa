"""`coderctl watch`: the read-only checks on a schedule, served as Prometheus metrics, /healthz and /status.

schedule.py runs jobs on a small thread pool (own interval, no overlap, timeouts); watcher.py turns checks
into jobs over fresh per-round Apps and keeps their latest results (state.py); metrics.py and server.py serve
them; backups.py reads the backup directory's manifests, bucket.py those under an s3:// prefix; service.py
runs it all until SIGTERM or SIGINT.
"""
