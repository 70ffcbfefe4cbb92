"""Screens and everything before a model sees them: loading, validation, featurisation, splits, synthetic
screens, target scaling and where the shared data lives."""
