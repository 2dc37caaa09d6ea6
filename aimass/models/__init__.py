"""Models: the built-in CNN, Hugging Face checkpoints, and the artifact format every model is saved in."""
