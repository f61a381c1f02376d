"""Fusion of the image and tabular branches: presence and severity heads."""
