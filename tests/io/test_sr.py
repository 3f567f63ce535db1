"""DICOM SR: TID 1500 measurement reports that validate with dciodvfy and read back."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from abdus import __version__
from abdus.errors import AbdusInputError
from abdus.io.sr import (
    CaliperMeasurement,
    build_sr,
    is_sr_document,
    read_source_header,
    read_sr_report,
    write_sr,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dicom_factory as factory

DCIODVFY = shutil.which("dciodvfy")
KT = [
    CaliperMeasurement("KT_LA", 61.234567, (10.0, 20.0), (50.25, 60.5)),
    CaliperMeasurement("KT_SA", 40.5, (30.0, 5.0), (31.75, 70.125)),
]
OFF_IMAGE = CaliperMeasurement("KT_LA", 61.2, (-58.9, 20.0), (50.0, 60.0))  # x < 0: off the frame


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("sr_sources")
    rows, cols = factory.DUAL_VIEW_SHAPE
    regions = factory.dual_view_regions()
    return {
        "single": factory.make_us_dicom(
            folder / "single.dcm", rows=rows, cols=cols, regions=regions
        ),
        "clip": factory.make_us_dicom(folder / "clip.dcm", frames=3, regions=regions[:1]),
    }


def _dciodvfy_errors(path: Path) -> list[str]:
    result = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True)
    return [ln for ln in (result.stdout + result.stderr).splitlines() if ln.startswith("Error")]


def test_measurements_round_trip_in_mm_and_source_px(sources, tmp_path):
    path = write_sr(
        tmp_path / "kt.sr.dcm", sources["single"], KT, view="kidney_left_trans", model_id="m1"
    )
    report = read_sr_report(path)
    assert [c.code for c in report.calipers] == ["KT_LA", "KT_SA"]
    for found, caliper in zip(report.calipers, KT, strict=True):
        assert found.value_mm == pytest.approx(caliper.value_mm, rel=1e-12)
        flat = [*found.a, *found.b]
        assert flat == pytest.approx([*caliper.a, *caliper.b], abs=1e-4)  # GraphicData is FL
    assert report.view == "kidney_left_trans" and report.model_id == "m1"
    source = pydicom.dcmread(sources["single"], stop_before_pixels=True)
    assert report.source_sop_instance_uid == source.SOPInstanceUID
    assert report.source_sop_class_uid == source.SOPClassUID
    assert report.source_frame is None  # a single-frame source references no frame


def test_sr_references_the_source_image_frame_and_uses_mm(sources, tmp_path):
    path = write_sr(
        tmp_path / "clip.sr.dcm", sources["clip"], KT[:1], view="kidney_right_trans", frame=2
    )
    ds = pydicom.dcmread(path)
    assert is_sr_document(ds) and read_sr_report(path).source_frame == 2
    source = pydicom.dcmread(sources["clip"], stop_before_pixels=True)
    assert not is_sr_document(source)
    assert ds.Modality == "SR" and ds.StudyInstanceUID == source.StudyInstanceUID
    assert ds.PatientID == source.PatientID
    text = str(ds)
    assert source.SOPInstanceUID in text
    assert "Referenced Frame Number             IS: '3'" in text  # frame 2 (0-based)
    assert "UCUM" in text and "POLYLINE" in text and "Long axis" in text
    assert "Right" in text and "Kidney" in text


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (dicom3tools) not installed")
def test_sr_documents_pass_dciodvfy(sources, tmp_path):
    written = [
        write_sr(tmp_path / "a.sr.dcm", sources["single"], KT, view="kidney_left_trans"),
        write_sr(
            tmp_path / "b.sr.dcm", sources["clip"], KT[:1], view="kidney_right_trans", frame=1
        ),
        write_sr(tmp_path / "c.sr.dcm", sources["single"], [], view="others"),
        write_sr(
            tmp_path / "d.sr.dcm",
            sources["single"],
            [OFF_IMAGE],
            view="kidney_left_trans",
            withheld={"KT_SA": "landmark kt_sa_2 lies outside the ultrasound region"},
        ),
    ]
    for path in written:
        assert _dciodvfy_errors(path) == [], path.name


def test_an_image_without_measurements_still_records_its_view(sources, tmp_path):
    path = write_sr(tmp_path / "view.sr.dcm", sources["single"], [], view="liver_left_trans")
    report = read_sr_report(path)
    assert report.calipers == () and report.view == "liver_left_trans"
    assert report.source_sop_instance_uid == read_source_header(sources["single"]).SOPInstanceUID


def test_bad_inputs_are_clear_errors(sources, tmp_path):
    header = read_source_header(sources["single"])
    with pytest.raises(ValueError, match="finite"):
        build_sr(header, [CaliperMeasurement("KL_LA", float("nan"), (0, 0), (1, 1))], view="others")
    with pytest.raises(ValueError, match="unknown view"):
        build_sr(header, [], view="heart")
    not_sr = tmp_path / "x.txt"
    not_sr.write_text("hello")
    for path in (not_sr, sources["single"]):  # not DICOM; an image, not an SR
        with pytest.raises(AbdusInputError, match="not a readable") as caught:
            read_sr_report(path)
        assert str(caught.value).startswith(str(path)) and "\n" not in str(caught.value)
    with pytest.raises(AbdusInputError):
        read_source_header(not_sr)


def _items(ds, value_type: str, name: str) -> list:
    """Every content item of ``value_type`` with concept meaning ``name``, at any depth."""
    found = []
    for item in ds.get("ContentSequence", []):
        if item.ValueType == value_type and item.ConceptNameCodeSequence[0].CodeMeaning == name:
            found.append(item)
        found += _items(item, value_type, name)
    return found


def test_sr_follows_ihe_ai_results(sources, tmp_path):
    path = write_sr(
        tmp_path / "air.sr.dcm",
        sources["single"],
        KT,
        view="kidney_left_trans",
        model_id="m:1",
        withheld={"KT_SA": "no pixel spacing"},
    )
    ds = pydicom.dcmread(path)
    source = pydicom.dcmread(sources["single"], stop_before_pixels=True)
    groups = _items(ds, "CONTAINER", "Measurement Group")
    assert len(groups) == 3  # two calipers, one withheld
    for group in groups:
        for name, value in [
            ("Algorithm Name", "abdus"),
            ("Algorithm Version", __version__),
            ("Algorithm Parameters", "model_id=m:1"),
        ]:  # the group's algorithm, and the measurement's in a caliper group
            assert {i.TextValue for i in _items(group, "TEXT", name)} == {value}
    assert ds.VerificationFlag == "UNVERIFIED" and ds.SoftwareVersions == __version__
    assert read_sr_report(path).model_id == "m:1" and ds.ManufacturerModelName == "m:1"
    (study,) = ds.CurrentRequestedProcedureEvidenceSequence
    (series,) = study.ReferencedSeriesSequence
    (instance,) = series.ReferencedSOPSequence
    assert study.StudyInstanceUID == source.StudyInstanceUID
    assert series.SeriesInstanceUID == source.SeriesInstanceUID
    assert instance.ReferencedSOPClassUID == source.SOPClassUID
    assert instance.ReferencedSOPInstanceUID == source.SOPInstanceUID


def test_a_withheld_measurement_has_no_coordinate_and_says_why(sources, tmp_path):
    reason = "caliper end outside the ultrasound region x 0..87, y 0..89 px (kt_sa_2 at 40, 95 px)"
    path = write_sr(
        tmp_path / "w.sr.dcm",
        sources["single"],
        [OFF_IMAGE, KT[1]],
        view="kidney_left_trans",
        withheld={"KT_SA": reason},
    )
    report = read_sr_report(path)
    assert [c.code for c in report.calipers] == ["KT_SA"]  # the off-image KT_LA is not drawn
    assert report.withheld["KT_SA"] == reason
    assert "outside the 192 x 128 px image" in report.withheld["KT_LA"]
    ds = pydicom.dcmread(path)
    scoords = _items(ds, "SCOORD", "Image Region")
    assert len(scoords) == 1 and min(scoords[0].GraphicData) >= 0
    comments = [i.TextValue for i in _items(ds, "TEXT", "Comment")]
    assert reason in comments and len(comments) == 2
    failures = _items(ds, "CODE", "Length")
    assert {i.ConceptCodeSequence[0].CodeValue for i in failures} == {"114006"}


def test_every_measurement_withheld_still_records_view_and_source(sources, tmp_path):
    path = write_sr(
        tmp_path / "all.sr.dcm",
        sources["clip"],
        [],
        view="spleen_long",
        frame=1,
        withheld={"SL_LA": "no pixel spacing in the file or given (--spacing-mm)"},
    )
    report = read_sr_report(path)
    assert report.calipers == () and report.view == "spleen_long"
    assert set(report.withheld) == {"SL_LA"} and report.source_frame == 1
    with pytest.raises(ValueError, match="unknown measurement code"):
        build_sr(read_source_header(sources["single"]), [], view="others", withheld={"XX": "?"})


def test_a_source_without_patient_attributes_still_gets_an_sr(sources, tmp_path):
    ds = pydicom.dcmread(sources["single"])
    for keyword in ("PatientBirthDate", "AccessionNumber", "StudyID"):
        delattr(ds, keyword)
    bare = tmp_path / "bare.dcm"
    ds.save_as(bare)
    report = read_sr_report(write_sr(tmp_path / "b.sr.dcm", bare, KT, view="kidney_left_trans"))
    assert len(report.calipers) == 2
    assert np.isfinite([c.value_mm for c in report.calipers]).all()
