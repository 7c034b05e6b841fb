"""Hydra config tree shipped inside the package (a module so Hydra can find it by name)."""
