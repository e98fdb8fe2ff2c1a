"""Deterministic identities: UIDs, patient names and IDs, dates and times.

Everything is derived from the generator's seed, never from the clock or the
host, so the same seed always gives the same files.
"""

from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np

__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "StudyIdentity",
    "derive_uid",
    "study_identity",
]

#: Identifies the writer of the synthetic files (File Meta Information). Fixed, so
#: that output bytes do not depend on the version of pydicom installed.
IMPLEMENTATION_VERSION_NAME = "BREASTAI_SYN_1"


def derive_uid(*parts: object) -> str:
    """A UID under the ``2.25`` root (PS3.5 B.2) derived from ``parts``.

    The UUID-derived form: ``2.25.`` followed by a 128-bit integer, here the first
    16 bytes of a SHA-256 of the parts, so equal parts give equal UIDs.
    """
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode("utf-8")).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


IMPLEMENTATION_CLASS_UID = derive_uid("breast-ai-node", "synthetic-writer", 1)

_EPOCH = dt.date(2024, 1, 8)


class StudyIdentity:
    """Patient and study identifiers of one synthetic study.

    The patient name is ``SYNTH^PATIENT<n>`` and the ID ``SYN<seed>-<n>``: plainly
    synthetic. Study dates fall in 2024-2025 on weekdays, times in office hours.
    """

    def __init__(
        self,
        seed: int,
        index: int,
        study_date: dt.date,
        study_time: dt.time,
        birth_date: dt.date,
    ) -> None:
        self.seed = seed
        self.index = index
        self.study_date = study_date
        self.study_time = study_time
        self.birth_date = birth_date

    @property
    def patient_name(self) -> str:
        return f"SYNTH^PATIENT{self.index + 1:04d}"

    @property
    def patient_id(self) -> str:
        return f"SYN{self.seed % 100000:05d}-{self.index + 1:04d}"

    @property
    def accession_number(self) -> str:
        return f"A{self.seed % 10000:04d}{self.index + 1:06d}"

    @property
    def study_id(self) -> str:
        return f"{self.index + 1:04d}"

    @property
    def study_uid(self) -> str:
        return derive_uid("study", self.seed, self.index)

    @property
    def patient_age(self) -> str:
        years = self.study_date.year - self.birth_date.year
        if (self.study_date.month, self.study_date.day) < (
            self.birth_date.month,
            self.birth_date.day,
        ):
            years -= 1
        return f"{years:03d}Y"

    def uid(self, *parts: object) -> str:
        """A UID for something inside this study (a series, an instance)."""
        return derive_uid("study", self.seed, self.index, *parts)

    def date(self) -> str:
        """StudyDate (DA)."""
        return self.study_date.strftime("%Y%m%d")

    def time(self, seconds_after: int = 0) -> str:
        """A TM ``seconds_after`` the study started."""
        start = dt.datetime.combine(self.study_date, self.study_time)
        return (start + dt.timedelta(seconds=seconds_after)).strftime("%H%M%S")


def study_identity(seed: int, index: int, rng: np.random.Generator) -> StudyIdentity:
    """Draw the dates of study ``index`` (0-based) from ``rng``."""
    day = _EPOCH + dt.timedelta(days=int(rng.integers(0, 700)))
    while day.weekday() >= 5:
        day += dt.timedelta(days=1)
    seconds = int(rng.integers(8 * 3600, 17 * 3600))
    time = dt.time(seconds // 3600, (seconds // 60) % 60, seconds % 60)
    age_days = int(rng.integers(40 * 365, 75 * 365))
    birth = day - dt.timedelta(days=age_days)
    return StudyIdentity(seed, index, day, time, birth)
