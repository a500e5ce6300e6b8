"""Shipping: the target runtime's check of a model folder, and the packaging of the top lanes."""
