"""Importable test helpers: model folders (``models``) and small DICOM images (``images``)."""
