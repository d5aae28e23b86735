"""The API's routes, one module per resource; each stays thin and calls a service."""
