"""The models the studio trains: the catalog it offers (catalog.py: ids, sizes, the bundled demo
and tiny models), their shapes (shapes.py: the linear layers LoRA wraps, each model's
architecture and size) and the local copies it builds or finds (local.py)."""
