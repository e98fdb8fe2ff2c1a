"""Synthetic breast imaging studies as real DICOM, with known ground truth.

``write_studies(out, studies, seed, SynthOptions(...))`` writes screening
mammograms (four views per study, Digital Mammography X-Ray Image Storage - For
Presentation) or breast ultrasound images, and ``labels.csv`` with one row per
image. See ``docs/synthetic.md``.
"""

from training.synthetic.generate import write_studies
from training.synthetic.labels import COLUMNS, LABELS_FILE, read_labels
from training.synthetic.options import SynthImage, SynthOptions

__all__ = ["COLUMNS", "LABELS_FILE", "SynthImage", "SynthOptions", "read_labels", "write_studies"]
