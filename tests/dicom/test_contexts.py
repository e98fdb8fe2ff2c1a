"""The listener's supported presentation contexts and their per-association copy."""

from __future__ import annotations

import copy

from pynetdicom import AE

from node.dicom.contexts import STORAGE_SOP_CLASSES, SupportedContexts, add_scp_contexts

MG = "1.2.840.10008.5.1.4.1.1.1.2"
J2K = "1.2.840.10008.1.2.4.90"


def supported() -> SupportedContexts:
    ae = AE()
    add_scp_contexts(ae)
    return SupportedContexts(ae.supported_contexts)


def test_every_storage_class_in_every_syntax_is_supported() -> None:
    contexts = supported()
    by_class = {str(cx.abstract_syntax): cx for cx in contexts}
    assert set(STORAGE_SOP_CLASSES) <= set(by_class)
    assert J2K in by_class[MG].transfer_syntax


def test_the_copy_for_an_association_equals_a_deep_copy() -> None:
    contexts = supported()
    cheap = copy.deepcopy(contexts)
    deep = copy.deepcopy(list(contexts))
    assert [vars(a) for a in cheap] == [vars(b) for b in deep]
    assert len(cheap) == len(contexts) > 100


def test_the_copy_is_independent_of_the_server_contexts() -> None:
    contexts = supported()
    cheap = copy.deepcopy(contexts)
    mg = next(i for i, cx in enumerate(cheap) if cx.abstract_syntax == MG)
    before = len(contexts[mg].transfer_syntax)
    cheap[mg].add_transfer_syntax("1.2.3.4.5")  # a private syntax, appended in place
    cheap[mg].scp_role = True
    assert cheap[mg] is not contexts[mg]
    assert len(contexts[mg].transfer_syntax) == before
    assert len(cheap[mg].transfer_syntax) == before + 1
    assert contexts[mg].scp_role is None
