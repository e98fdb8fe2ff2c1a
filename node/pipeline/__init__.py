"""The pipeline: completion and eligibility, preprocessing, inference, explanation."""
