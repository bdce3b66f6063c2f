"""The commands' entry points that sit above every layer: `fastkv` (the server)."""
