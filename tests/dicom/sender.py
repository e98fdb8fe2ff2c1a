"""A stand-alone SCU for the crash test: sends files, logs each acknowledged SOP Instance UID.

Usage: python -m tests.dicom.sender HOST PORT AE_TITLE ACK_LOG FILE...

Each UID is appended to ACK_LOG (flushed and fsynced) only after a Success response, so
the log is exactly what the node promised to keep. Exits 0 when everything was sent,
1 as soon as the association fails (the node was killed).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pydicom import dcmread
from pynetdicom import AE


def main(argv: list[str]) -> int:
    host, port, ae_title, ack_log, *files = argv
    datasets = [dcmread(path) for path in files]
    ae = AE(ae_title="CRASH_SCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for sop_class, syntax in sorted(
        {(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID)) for d in datasets}
    ):
        ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate(host, int(port), ae_title=ae_title)
    if not assoc.is_established:
        return 1
    with Path(ack_log).open("a", encoding="ascii") as log:
        for ds in datasets:
            try:
                result = assoc.send_c_store(ds)
            except (RuntimeError, ValueError, OSError):
                return 1
            if "Status" not in result or result.Status != 0x0000:
                return 1
            log.write(f"{ds.SOPInstanceUID}\n")
            log.flush()
            os.fsync(log.fileno())
    assoc.release()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
