"""The deployment files: the compose stack, Prometheus rules and Grafana dashboards."""
