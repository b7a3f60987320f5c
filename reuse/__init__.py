"""Data-efficient neural scaling via model reuse: data, MLM training, growth, evaluation and scaling-law analysis."""

__version__ = "0.1.0"
