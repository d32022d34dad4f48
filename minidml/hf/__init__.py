"""Hugging Face: exporting a student as a ``transformers`` model with its tokenizer
(:mod:`~minidml.hf.export`), and loading any causal LM to score it like a student
(:mod:`~minidml.hf.models`). Both need the ``hf`` extra."""
