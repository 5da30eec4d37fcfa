"""coderctl: day-2 operations for a self-hosted Coder deployment on Kubernetes."""

__version__ = "0.1.0"
