"""doctor: every check plus evidence from the cluster (events, logs, conditions, the ingress's view, Coder's
own health report), turned by a table of causal rules into root causes with evidence and the exact fix.
It reads only; it never changes anything."""
