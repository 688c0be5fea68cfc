"""LightningDataModules for lit-classifiers."""
