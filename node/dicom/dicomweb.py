"""Sending result objects to a DICOMweb server with STOW-RS (PS3.18 10.5).

One ``POST <root>/studies`` per pass carries every object due for the destination, as a
``multipart/related; type="application/dicom"`` body (through ``dicomweb-client``). The
server answers with a Store Instances Response (PS3.18 10.5.3): each object is in its
Referenced SOP Sequence (stored; a Warning Reason makes it a warning), or in its Failed
SOP Sequence with a Failure Reason, which is a DIMSE status (0xA700 Out of Resources,
0xC000 Cannot Understand, ...). Each object's outcome is that status; an object the
response does not mention, or a request that fails as a whole (connection refused, HTTP
4xx/5xx without a response data set, time-out), is a failure with the reason, retried by
the sender like a failed C-STORE. Storing the same SOP Instance UID again is how a retry
works: archives replace or keep the instance, never duplicate it.
"""

from __future__ import annotations

from collections.abc import Sequence

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

from node.config import DicomwebDestination
from node.dicom.scu import StoreOutcome

__all__ = ["store_over_dicomweb"]

_SUCCESS = 0x0000
_WARNING = 0xB000  # Coercion of Data Elements, the generic STOW-RS warning
_PROCESSING_FAILURE = 0x0110


def _session(destination: DicomwebDestination) -> requests.Session:
    session = requests.Session()
    auth = destination.auth
    if auth is not None and auth.username is not None:
        session.auth = (auth.username, auth.password or "")
    elif auth is not None and auth.token is not None:
        session.headers["Authorization"] = f"Bearer {auth.token}"
    session.verify = str(destination.ca_certificates) if destination.ca_certificates else True
    return session


def _reason(exc: Exception) -> str:
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        response = exc.response
        return f"HTTP {response.status_code} {response.reason} from STOW-RS"
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"STOW-RS request failed: {text[:300]}"


def store_over_dicomweb(
    destination: DicomwebDestination, datasets: Sequence[Dataset]
) -> list[StoreOutcome]:
    """STOW-RS ``datasets`` to ``destination``; one outcome per dataset, in order."""
    if not datasets:
        return []
    with _session(destination) as session:
        client = DICOMwebClient(
            str(destination.dicomweb).rstrip("/"),
            session=session,
            timeout=destination.timeout_seconds,
        )
        client.set_http_retry_params(retry=False)  # the sender retries, with its backoff
        try:
            response = client.store_instances(list(datasets))
        except requests.HTTPError as exc:
            # 409 Conflict and 202 Accepted carry a response data set naming each failure
            answer = _response_dataset(exc.response)
            if answer is None:
                return [StoreOutcome(None, _reason(exc)) for _ in datasets]
            response = answer
        except (requests.RequestException, OSError, ValueError) as exc:
            return [StoreOutcome(None, _reason(exc)) for _ in datasets]
    return _outcomes(response, datasets)


def _response_dataset(response: requests.Response | None) -> Dataset | None:
    """The Store Instances Response an error response carries in DICOM JSON, if any."""
    if response is None or not response.content:
        return None
    media = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if media not in ("application/dicom+json", "application/json"):
        return None
    try:
        return Dataset.from_json(response.json())
    except ValueError:
        return None


def _outcomes(response: Dataset, datasets: Sequence[Dataset]) -> list[StoreOutcome]:
    """Each dataset's outcome in a Store Instances Response."""
    answered: dict[str, StoreOutcome] = {}
    for item in response.get("ReferencedSOPSequence", []) or []:
        uid = str(item.get("ReferencedSOPInstanceUID", ""))
        warning = item.get("WarningReason")
        answered[uid] = StoreOutcome(_SUCCESS if warning is None else int(warning))
    for item in response.get("FailedSOPSequence", []) or []:
        uid = str(item.get("ReferencedSOPInstanceUID", ""))
        reason = item.get("FailureReason")
        code = _PROCESSING_FAILURE if reason is None else int(reason)
        answered[uid] = StoreOutcome(code, f"STOW-RS failure reason 0x{code:04X}")
    return [
        answered.get(str(ds.SOPInstanceUID), StoreOutcome(None, "not in the STOW-RS response"))
        for ds in datasets
    ]
