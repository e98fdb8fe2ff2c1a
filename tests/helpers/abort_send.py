"""A sender that aborts half way: starts a C-STORE of one file and, when a line arrives on
its standard input, sends an A-ABORT and exits at once.

Usage: python -m tests.helpers.abort_send HOST PORT AE_TITLE FILE

Run as its own process: pynetdicom's requestor raises in its own threads when it is
aborted while P-DATA is still queued, which is of no concern to the node under test.
"""

from __future__ import annotations

import os
import sys
import threading

from pydicom import dcmread
from pynetdicom import AE, _config


def main(argv: list[str]) -> int:
    host, port, ae_title, path = argv
    meta = dcmread(path, stop_before_pixels=True).file_meta
    ae = AE(ae_title="ABORT_SCU")
    ae.add_requested_context(str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID))
    _config.STORE_SEND_CHUNKED_DATASET = True
    assoc = ae.associate(host, int(port), ae_title=ae_title)
    if not assoc.is_established:
        return 1
    threading.Thread(target=assoc.send_c_store, args=(path,), daemon=True).start()
    sys.stdin.readline()
    assoc.abort()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
