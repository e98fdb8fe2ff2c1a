"""DICOM networking: our Storage SCP, SCU helpers, presentation contexts and statuses."""
