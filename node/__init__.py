"""Breast AI Node: a DICOM-native AI node for breast cancer detection.

Data flow: receive (C-STORE) -> store (spool + queue) -> complete -> infer
-> render (SR, CAD SR, secondary captures) -> send back to the archive.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
