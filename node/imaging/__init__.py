"""Images as the models see them and as viewers show them.

========================  ==========================================================
module                    what it holds
========================  ==========================================================
:mod:`.dataset`           reading DICOM files; modality, laterality and view readers
:mod:`.pixels`            decoding; Modality and VOI transforms to ``[0, 1]``
:mod:`.geometry`          the invertible map between an original image and the model
                          input
:mod:`.breast`            breast and ultrasound image-area finding
:mod:`.transforms`        CLAHE, resize and pad, display scaling (torch)
:mod:`.preprocess`        the whole step, one DICOM image to one model input
========================  ==========================================================

Only :mod:`.transforms` and :mod:`.preprocess` need torch; result objects use
:mod:`.dataset`, :mod:`.pixels` and :mod:`.geometry` alone. ``training/`` imports this
package for its inputs, so a model sees the same pixels in training and in service.
"""
