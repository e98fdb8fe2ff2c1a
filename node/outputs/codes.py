"""Coded concepts used by the result objects, defined once.

Schemes: ``DCM`` (PS3.16 Annex D), ``SCT`` (SNOMED CT), ``UCUM`` (units). Code
meanings are DICOM's own short forms (at most 64 characters, the LO limit that
highdicom enforces). Context groups (CID) are named where a template draws a
value from one.
"""

from __future__ import annotations

from typing import Literal

from pydicom.dataset import Dataset
from pydicom.sr.coding import Code

__all__ = [
    "ALGORITHM_FAMILY_AI",
    "ALGORITHM_NAME",
    "ALGORITHM_VERSION",
    "ANALYSIS_PERFORMED",
    "ARBITRARY_UNIT",
    "ASSESSMENT_CATEGORY",
    "BIRADS",
    "BREAST",
    "CAD_FINDINGS_SUMMARY",
    "CAD_OPERATING_POINT",
    "CAD_OPERATING_POINT_DESCRIPTION",
    "CAD_PROCESSING_SUMMARY",
    "CAD_REPORT",
    "CASE_SENSITIVITY",
    "CASE_SPECIFICITY",
    "CENTER",
    "CERTAINTY_OF_FINDING",
    "CERTAINTY_OF_IMPRESSION",
    "CLASS_CODES",
    "COMMENT",
    "COMPOSITE_FEATURE",
    "COMPOSITE_TYPE",
    "DETECTION_PERFORMED",
    "ENGLISH_US",
    "ENSEMBLE_DISAGREEMENT",
    "FAILED_ANALYSES",
    "FAILED_DETECTIONS",
    "FINDING",
    "FINDING_TYPES",
    "IMAGE_LATERALITY",
    "IMAGE_LIBRARY",
    "IMAGE_REGION",
    "IMAGE_VIEW",
    "IMAGE_VIEW_MODIFIER",
    "IMAGING_PROCEDURE",
    "IMPRESSION_DESCRIPTION",
    "INDIVIDUAL_IMPRESSION",
    "LATERALITY",
    "LATERALITY_CODES",
    "MAXIMUM_CAD_OPERATING_POINT",
    "MILLIMETER",
    "NO_UNITS",
    "OPERATING_POINT_TABLE",
    "OUTLINE",
    "PERCENT",
    "PIXEL_SPACING_HORIZONTAL",
    "PIXEL_SPACING_VERTICAL",
    "PRIVATE_SCHEME",
    "PROBABILITY_OF_CANCER",
    "QUALITATIVE_EVALUATIONS",
    "RANGE_0_N",
    "RANGE_1_N",
    "RECOMMENDED_CAD_OPERATING_POINT",
    "RELATED_SPATIALLY",
    "RENDERING_INTENT",
    "RENDER_OPTIONAL",
    "RENDER_REQUIRED",
    "SCOPE_MULTIPLE_IMAGES",
    "SCOPE_OF_FEATURE",
    "SCOPE_ONE_IMAGE",
    "SELECTED_REGION",
    "SELECTED_REGION_DESCRIPTION",
    "SIDE_CODES",
    "SINGLE_IMAGE_FINDING",
    "SOURCE_IMAGE",
    "STATUS",
    "SUCCESSFUL_ANALYSES",
    "SUCCESSFUL_DETECTIONS",
    "SUMMARY_OF_ANALYSES",
    "SUMMARY_OF_DETECTIONS",
    "VIEW_CODES",
    "X_CONCEPT",
    "Y_CONCEPT",
    "Status",
    "image_probability",
    "private_scheme",
]

# --------------------------------------------------------------------------- #
# Shared by TID 1500 and TID 4000
# --------------------------------------------------------------------------- #
PROBABILITY_OF_CANCER = Code("111047", "DCM", "Probability of cancer")
CERTAINTY_OF_FINDING = Code("111012", "DCM", "Certainty of Finding")
ASSESSMENT_CATEGORY = Code("111005", "DCM", "Assessment Category")
ALGORITHM_NAME = Code("111001", "DCM", "Algorithm Name")
ALGORITHM_VERSION = Code("111003", "DCM", "Algorithm Version")
ALGORITHM_FAMILY_AI = Code("123110", "DCM", "Artificial Intelligence")
IMAGE_LIBRARY = Code("111028", "DCM", "Image Library")
SOURCE_IMAGE = Code("121324", "DCM", "Source image")
BREAST = Code("76752008", "SCT", "Breast")
#: Language of content (TID 1204), as highdicom writes it in TID 1500.
ENGLISH_US = Code("en-US", "RFC5646", "English (United States)")

#: Document titles: a report with marks is a TID 1500 "Imaging Measurement Report"
#: (CID 7021); one without (no region reaches the operating point, or no result) is a
#: TID 2000 "Diagnostic Imaging Report" (CID 7000): it measures nothing, and viewers
#: (OHIF) open every 126000 report as measurements and fail on one without any.
IMAGING_MEASUREMENT_REPORT = Code("126000", "DCM", "Imaging Measurement Report")
DIAGNOSTIC_IMAGING_REPORT = Code("18748-4", "LN", "Diagnostic Imaging Report")

#: Procedure reported (TID 1500 row 4); a CID 100 member, as PixelMed checks.
IMAGING_PROCEDURE = Code("363679005", "SCT", "Imaging procedure")
#: TID 1500 row 12: report-level qualitative evaluations (CODE and TEXT items).
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")
#: TEXT concept for free-text statements (intended use, failure reason).
COMMENT = Code("121106", "DCM", "Comment")
#: An image's call at the operating point (TID 1500 qualitative evaluation; TID 2002).
FINDING = Code("121071", "DCM", "Finding")
#: TID 2000 sections (CID 7001) and the impression element (CID 7002).
FINDINGS = Code("121070", "DCM", "Findings")
IMPRESSIONS = Code("121072", "DCM", "Impressions")
IMPRESSION = Code("121073", "DCM", "Impression")

#: The project's private coding scheme (PS3.16 Section 8.2: designators starting "99"),
#: for the per-image numbers no standard concept names: identified in each TID 1500
#: report's Coding Scheme Identification Sequence.
PRIVATE_SCHEME = "99BREASTAINODE"

#: The ensemble's disagreement on an image: the weighted standard deviation of its
#: members' malignancy probabilities (percentage points).
ENSEMBLE_DISAGREEMENT = Code("ENSEMBLE-SD", PRIVATE_SCHEME, "Ensemble disagreement (SD)")


def image_probability(label: str) -> Code:
    """``Image probability: <label>``, a private concept for the probability the model
    gives an image's label (a card label, e.g. normal, benign, malignant)."""
    key = "".join(c for c in label.upper() if c.isalnum())[:14] or "LABEL"
    return Code(f"P-{key}", PRIVATE_SCHEME, f"Image probability: {label}"[:64])


def private_scheme() -> Dataset:
    """A Coding Scheme Identification Sequence item describing :data:`PRIVATE_SCHEME`."""
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = "Breast AI Node result concepts"
    item.CodingSchemeResponsibleOrganization = "Breast AI Node project"
    return item


#: Image-level class as a coded finding.
CLASS_CODES: dict[str, Code] = {
    "malignant": Code("21594007", "SCT", "Malignant"),
    "benign": Code("30807003", "SCT", "Benign"),
    "normal": Code("17621005", "SCT", "Normal"),
}

#: CID 6026/6027 (BI-RADS assessment categories), by category number.
BIRADS: dict[int, Code] = {
    0: Code("397138000", "SCT", "0 - Incomplete - Need additional imaging evaluation +/- priors"),
    1: Code("397140005", "SCT", "1 - Negative"),
    2: Code("397141009", "SCT", "2 - Benign"),
    3: Code("397143007", "SCT", "3 - Probably Benign"),
    4: Code("397144001", "SCT", "4 - Suspicious"),
    5: Code("397145000", "SCT", "5 - Highly suggestive of malignancy"),
}

#: Finding site laterality (CID 244), by DICOM laterality letter.
LATERALITY = Code("272741003", "SCT", "Laterality")
LATERALITY_CODES: dict[str, Code] = {
    "L": Code("7771000", "SCT", "Left"),
    "R": Code("24028007", "SCT", "Right"),
    "B": Code("51440002", "SCT", "Bilateral"),
}

#: Image laterality as a breast side (CID 6022), by DICOM laterality letter.
SIDE_CODES: dict[str, Code] = {
    "L": Code("80248007", "SCT", "Left breast"),
    "R": Code("73056007", "SCT", "Right breast"),
    "B": Code("63762007", "SCT", "Both breasts"),
}

#: Mammography views (CID 4014, code meanings as the context group has them), by
#: ViewPosition: used only for a source without a View Code Sequence (whose own codes,
#: with their modifiers, are copied otherwise).
VIEW_CODES: dict[str, Code] = {
    "CC": Code("399162004", "SCT", "cranio-caudal"),
    "MLO": Code("399368009", "SCT", "medio-lateral oblique"),
    "XCCL": Code("399192008", "SCT", "cranio-caudal exaggerated laterally"),
    "XCCM": Code("399101009", "SCT", "cranio-caudal exaggerated medially"),
    "ML": Code("399260004", "SCT", "medio-lateral"),
    "LM": Code("399352003", "SCT", "latero-medial"),
    "LMO": Code("399099002", "SCT", "latero-medial oblique"),
    "FB": Code("399196006", "SCT", "caudo-cranial (from below)"),
    "SIO": Code("399188001", "SCT", "superolateral to inferomedial oblique"),
}

#: What a Grad-CAM region is called: CID 6014 "Selected region" (the model points
#: at an area; it does not say which lesion type it is).
SELECTED_REGION = Code("111099", "DCM", "Selected region")
SELECTED_REGION_DESCRIPTION = Code("111058", "DCM", "Selected Region Description")

#: Lesion types a model card may name, for region findings.
FINDING_TYPES: dict[str, Code] = {
    "mass": Code("129788004", "SCT", "Mammographic breast mass"),
    "calcification": Code("129769006", "SCT", "Calcification Cluster"),
    "distortion": Code("129792006", "SCT", "Architectural distortion of breast"),
    "region": SELECTED_REGION,
}

# --------------------------------------------------------------------------- #
# Units (UCUM)
# --------------------------------------------------------------------------- #
NO_UNITS = Code("1", "UCUM", "no units")
PERCENT = Code("%", "UCUM", "Percent")
MILLIMETER = Code("mm", "UCUM", "millimeter")

# --------------------------------------------------------------------------- #
# Mammography CAD SR (TID 4000-4023)
# --------------------------------------------------------------------------- #
CAD_REPORT = Code("111036", "DCM", "Mammography CAD Report")
CAD_PROCESSING_SUMMARY = Code("111017", "DCM", "CAD Processing and Findings Summary")
SUMMARY_OF_DETECTIONS = Code("111064", "DCM", "Summary of Detections")
SUMMARY_OF_ANALYSES = Code("111065", "DCM", "Summary of Analyses")
SUCCESSFUL_DETECTIONS = Code("111063", "DCM", "Successful Detections")
FAILED_DETECTIONS = Code("111025", "DCM", "Failed Detections")
SUCCESSFUL_ANALYSES = Code("111062", "DCM", "Successful Analyses")
FAILED_ANALYSES = Code("111024", "DCM", "Failed Analyses")
DETECTION_PERFORMED = Code("111022", "DCM", "Detection Performed")
ANALYSIS_PERFORMED = Code("111004", "DCM", "Analysis Performed")
INDIVIDUAL_IMPRESSION = Code("111034", "DCM", "Individual Impression/Recommendation")
IMPRESSION_DESCRIPTION = Code("111033", "DCM", "Impression Description")
RENDERING_INTENT = Code("111056", "DCM", "Rendering Intent")
SINGLE_IMAGE_FINDING = Code("111059", "DCM", "Single Image Finding")
COMPOSITE_FEATURE = Code("111015", "DCM", "Composite Feature")
COMPOSITE_TYPE = Code("111016", "DCM", "Composite Type")
SCOPE_OF_FEATURE = Code("111057", "DCM", "Scope of Feature")
CENTER = Code("111010", "DCM", "Center")
OUTLINE = Code("111041", "DCM", "Outline")
IMAGE_REGION = Code("111030", "DCM", "Image Region")
IMAGE_LATERALITY = Code("111027", "DCM", "Image Laterality")
IMAGE_VIEW = Code("111031", "DCM", "Image View")
IMAGE_VIEW_MODIFIER = Code("111032", "DCM", "Image View Modifier")
CERTAINTY_OF_IMPRESSION = Code("111013", "DCM", "Certainty of impression")
PIXEL_SPACING_HORIZONTAL = Code("111026", "DCM", "Horizontal Pixel Spacing")
PIXEL_SPACING_VERTICAL = Code("111066", "DCM", "Vertical Pixel Spacing")

#: CID 6034 Intended Use of CAD Output.
RENDER_REQUIRED = Code(
    "111150", "DCM", "Presentation Required: Rendering device is expected to present"
)
RENDER_OPTIONAL = Code("111151", "DCM", "Presentation Optional: Rendering device may present")
#: CID 6035 / CID 6036.
RELATED_SPATIALLY = Code("111154", "DCM", "Target content items are related spatially")
SCOPE_ONE_IMAGE = Code("111157", "DCM", "Feature detected on only one of the images")
SCOPE_MULTIPLE_IMAGES = Code("111158", "DCM", "Feature detected on multiple images")

#: TID 4023 CAD Operating Points; axes from CID 6048.
CAD_OPERATING_POINT = Code("111071", "DCM", "CAD Operating Point")
MAXIMUM_CAD_OPERATING_POINT = Code("111072", "DCM", "Maximum CAD Operating Point")
RECOMMENDED_CAD_OPERATING_POINT = Code("111092", "DCM", "Recommended CAD Operating Point")
OPERATING_POINT_TABLE = Code("111093", "DCM", "Operating Point Table")
CAD_OPERATING_POINT_DESCRIPTION = Code("111081", "DCM", "CAD Operating Point Description")
X_CONCEPT = Code("122698", "DCM", "X-Concept")
Y_CONCEPT = Code("122699", "DCM", "Y-Concept")
CASE_SENSITIVITY = Code("111088", "DCM", "Case Sensitivity")
CASE_SPECIFICITY = Code("111090", "DCM", "Case Specificity")
#: Units of TID 4023 and TID 4006 (UCUM annotations, meanings as PS3.16 spells them).
ARBITRARY_UNIT = Code("[arb'U]", "UCUM", "arbitrary unit")
RANGE_0_N = Code("{0:n}", "UCUM", "range:0:n")
RANGE_1_N = Code("{1:n}", "UCUM", "range: 1:n")

Status = Literal["succeeded", "partially succeeded", "failed", "not attempted"]

#: CID 6042 Status of Results.
STATUS: dict[str, Code] = {
    "succeeded": Code("111222", "DCM", "Succeeded"),
    "partially succeeded": Code("111223", "DCM", "Partially Succeeded"),
    "failed": Code("111224", "DCM", "Failed"),
    "not attempted": Code("111225", "DCM", "Not Attempted"),
}

#: CID 6047 CAD Processing and Findings Summary, by (status, with findings).
CAD_FINDINGS_SUMMARY: dict[tuple[str, bool], Code] = {
    ("succeeded", False): Code("111241", "DCM", "All algorithms succeeded; without findings"),
    ("succeeded", True): Code("111242", "DCM", "All algorithms succeeded; with findings"),
    ("partially succeeded", False): Code(
        "111243", "DCM", "Not all algorithms succeeded; without findings"
    ),
    ("partially succeeded", True): Code(
        "111244", "DCM", "Not all algorithms succeeded; with findings"
    ),
    ("failed", False): Code("111245", "DCM", "No algorithms succeeded; without findings"),
}
