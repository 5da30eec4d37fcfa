"""Internals of the fake Kubernetes API server; the public face is :mod:`lab.kubeapi`."""
