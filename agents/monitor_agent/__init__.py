"""On-server agent of the express notification service."""
