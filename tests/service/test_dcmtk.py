"""``abdus serve`` against dcmtk: C-ECHO with echoscu, C-STORE with storescu, and the SRs it
forwards received by a storescp (all on 127.0.0.1, started and stopped by the fixtures)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest

PROCESS_S = 180.0  # tiny model, 2 busy cores: seconds per instance, minutes at worst
TOOL_S = 60  # one echoscu / storescu run


def referenced_sop_instances(ds: pydicom.Dataset) -> set[str]:
    """Every ReferencedSOPInstanceUID anywhere in a dataset (evidence and content trees)."""
    return {
        str(element.value)
        for element in ds.iterall()
        if element.keyword == "ReferencedSOPInstanceUID"
    }


def metric_total(metrics_text: str, name: str) -> float:
    """The sum of a Prometheus counter's samples over all its labels (``name`` without
    ``_total``)."""
    total = 0.0
    for line in metrics_text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample.split("{")[0] == f"{name}_total":
            total += float(value)
    return total


@pytest.fixture(scope="module")
def node_and_receiver(start_serve, start_storescp):
    """``abdus serve`` (accepting calls from STORESCU and ECHOSCU) forwarding to a storescp."""
    receiver = start_storescp("RECEIVER")
    serve = start_serve(forward=[receiver.destination], allow_ae=["STORESCU", "ECHOSCU"])
    return serve, receiver


def run_tool(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=TOOL_S, check=False)


def test_echoscu_verifies_abdus_serve(node_and_receiver, dcmtk_tool):
    serve, _ = node_and_receiver
    echo = run_tool(
        [dcmtk_tool("echoscu"), "-aet", "ECHOSCU", "-aec", serve.ae_title,
         serve.host, str(serve.dicom_port)]
    )  # fmt: skip
    assert echo.returncode == 0, f"echoscu failed:\n{echo.stdout}{echo.stderr}"


def test_storescu_instances_are_processed_and_their_srs_forwarded(
    node_and_receiver, dcmtk_tool, us_study: list[Path], bounded_wait
):
    serve, receiver = node_and_receiver
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in us_study]
    sop_uids = [str(ds.SOPInstanceUID) for ds in headers]
    study_uid = str(headers[0].StudyInstanceUID)

    store = run_tool(
        [dcmtk_tool("storescu"), "-aet", "STORESCU", "-aec", serve.ae_title,
         serve.host, str(serve.dicom_port), *map(str, us_study)]
    )  # fmt: skip
    assert store.returncode == 0, f"storescu failed:\n{store.stdout}{store.stderr}"

    serve.wait_processed(sop_uids, timeout_s=PROCESS_S)
    results = serve.spool / "results" / study_uid
    assert len(list(results.glob("*.sr.dcm"))) == len(us_study), sorted(results.iterdir())
    assert len(list(results.glob("*.json"))) >= len(us_study), sorted(results.iterdir())

    received = receiver.wait_datasets(len(us_study), timeout_s=PROCESS_S)
    assert len(received) == len(us_study)  # one SR per instance, none twice
    assert {str(ds.Modality) for ds in received} == {"SR"}
    assert {str(ds.StudyInstanceUID) for ds in received} == {study_uid}
    # Each source instance is referenced by exactly one of the forwarded SRs.
    references = [referenced_sop_instances(ds) & set(sop_uids) for ds in received]
    assert sorted(uid for refs in references for uid in refs) == sorted(sop_uids)

    # storescp has each file before abdus has its C-STORE response and counts the forward,
    # and a forward can start before its instance is counted as processed
    def all_counted() -> str | None:
        text = serve.get_text("/metrics")
        counted = ("abdus_results_forwarded", "abdus_instances_processed")
        return text if all(metric_total(text, c) >= len(us_study) for c in counted) else None

    metrics = bounded_wait(all_counted, timeout_s=PROCESS_S, what="the counts in /metrics")
    assert metric_total(metrics, "abdus_instances_received") == len(us_study)
    assert metric_total(metrics, "abdus_instances_processed") == len(us_study)
    assert metric_total(metrics, "abdus_results_forwarded") == len(us_study)
    assert metric_total(metrics, "abdus_instances_failed") == 0


def test_storescu_from_an_unknown_ae_title_is_refused(
    node_and_receiver, dcmtk_tool, us_study: list[Path]
):
    serve, _ = node_and_receiver
    store = run_tool(
        [dcmtk_tool("storescu"), "-aet", "STRANGER", "-aec", serve.ae_title,
         serve.host, str(serve.dicom_port), str(us_study[0])]
    )  # fmt: skip
    assert store.returncode != 0, f"storescu from STRANGER was accepted:\n{store.stderr}"
    assert "Association Rejected" in store.stdout + store.stderr  # not some other failure
