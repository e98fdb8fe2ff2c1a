"""The model stage: complete studies in, calibrated and explained results out.

==========================  ========================================================
module                      what it holds
==========================  ========================================================
:mod:`.engine`              :class:`~node.inference.engine.InferenceEngine`: batching,
                            decoding processes, the ensemble's forward passes
:mod:`.ensemble`            test-time augmentation views, temperature calibration,
                            member weights, breast and study aggregation
:mod:`.explain`             Grad-CAM and the regions it marks
:mod:`.runtime`             device, precision, channels-last and compilation
==========================  ========================================================

Its output types live in :mod:`node.results`, so that what reads a result (the result
objects, the status page) never imports torch.
"""
