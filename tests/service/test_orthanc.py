"""The full loop through a real PACS: a study uploaded to Orthanc, sent by Orthanc to
``abdus serve`` (C-STORE), and the SRs abdus forwards back found in Orthanc, in that study.

Part of ``make test`` (one small study, about half a minute, most of it abdus starting); the
Orthanc and abdus processes are started on loopback and stopped by the fixtures.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pydicom

PROCESS_S = 180.0  # bounded waits; a tiny model on 2 busy cores needs seconds


def referenced_sop_instances(ds: pydicom.Dataset) -> set[str]:
    """Every ReferencedSOPInstanceUID anywhere in a dataset (evidence and content trees)."""
    return {
        str(element.value)
        for element in ds.iterall()
        if element.keyword == "ReferencedSOPInstanceUID"
    }


def test_orthanc_study_goes_to_abdus_and_its_srs_come_back(
    orthanc_with_abdus, us_study: list[Path], bounded_wait
):
    orthanc, serve = orthanc_with_abdus
    files = us_study[:2]  # one small study: two images
    uploaded = [orthanc.request("POST", "/instances", path.read_bytes()) for path in files]
    assert {item["Status"] for item in uploaded} == {"Success"}, uploaded
    (study_id,) = {item["ParentStudy"] for item in uploaded}
    study = orthanc.request("GET", f"/studies/{study_id}")
    study_uid = study["MainDicomTags"]["StudyInstanceUID"]
    sop_uids = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files]

    job = orthanc.request(
        "POST",
        "/modalities/abdus/store",
        {"Resources": [study_id], "Synchronous": True, "Timeout": 60},
        timeout_s=90,
    )
    assert job.get("FailedInstancesCount", 0) == 0, job
    serve.wait_processed(sop_uids, timeout_s=PROCESS_S)

    def sr_instances() -> list[dict]:
        found = orthanc.request(
            "POST",
            "/tools/find",
            {"Level": "Instance", "Query": {"StudyInstanceUID": study_uid, "Modality": "SR"}},
        )
        return found if len(found) >= len(files) else []

    sr_ids = bounded_wait(sr_instances, timeout_s=PROCESS_S, poll_s=1.0, what="SRs in Orthanc")
    assert len(sr_ids) == len(files), sr_ids  # one SR per image, none twice
    references = set()
    for sr_id in sr_ids:
        ds = pydicom.dcmread(BytesIO(orthanc.request("GET", f"/instances/{sr_id}/file")))
        assert ds.Modality == "SR"
        assert ds.StudyInstanceUID == study_uid
        references |= referenced_sop_instances(ds) & set(sop_uids)
    assert references == set(sop_uids)  # every image of the study has its report
    # The study in Orthanc now holds its images and their reports.
    assert len(orthanc.request("GET", f"/studies/{study_id}/instances")) == 2 * len(files)
