"""Data: dataset layouts, compression variants, face crops, the manifest, pairing and loaders."""
