"""Build a real (small) Butler repository for the image tests (needs lsst-daf-butler)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from astropy.io import fits
from lsst.daf.butler import Butler, DatasetRef, DatasetType, FileDataset, FormatterV2

INSTRUMENT = "ZooCam"
RUN = "zooprep/test/run"
DIMENSIONS = ("instrument", "visit", "detector")


class FitsFileFormatter(FormatterV2):
    """Lets the datastore accept ``.fits`` files on ingest (reading is astropy's)."""

    default_extension = ".fits"
    supported_extensions = frozenset({".fits", ".fz"})
    can_read_from_local_file = True

    def read_from_local_file(
        self, path: str, component: str | None = None, expected_size: int = -1
    ) -> Any:
        return fits.getdata(path, extname="IMAGE")


def make_repo(
    root: Path,
    files: Mapping[tuple[str, int, int], Path],
    dataset_types: Sequence[str],
    transfer: str = "copy",
    datastore_root: str | None = None,
    instrument: str = INSTRUMENT,
) -> Path:
    """Create a Butler repo at ``root`` and ingest ``files[(type, visit, detector)]``.

    ``datastore_root`` (e.g. ``s3://bucket/repo/``) puts the datastore
    elsewhere than ``root``, which keeps the registry.  ``instrument`` names
    the repository's one instrument.
    """
    Butler.makeRepo(str(root))
    if datastore_root is not None:
        config = root / "butler.yaml"
        text = config.read_text()
        assert "root: <butlerRoot>\n" in text
        config.write_text(
            text.replace("root: <butlerRoot>\n", f"root: {datastore_root}\n", 1)
        )
    butler = Butler.from_config(str(root), writeable=True)
    reg = butler.registry
    visits = sorted({v for _, v, _ in files})
    detectors = sorted({d for _, _, d in files})
    reg.insertDimensionData(
        "instrument",
        {
            "name": instrument,
            "visit_max": 10**8,
            "detector_max": 1000,
            "class_name": "tests.ZooCam",
        },
    )
    reg.insertDimensionData(
        "physical_filter", {"instrument": instrument, "name": "r_03", "band": "r"}
    )
    reg.insertDimensionData("day_obs", {"instrument": instrument, "id": 20260305})
    for d in detectors:
        reg.insertDimensionData(
            "detector",
            {"instrument": instrument, "id": d, "full_name": f"R22_S{d:02d}"},
        )
    for v in visits:
        reg.insertDimensionData(
            "visit",
            {
                "instrument": instrument,
                "id": v,
                "name": f"visit{v}",
                "physical_filter": "r_03",
                "day_obs": 20260305,
            },
        )
    reg.registerRun(RUN)
    types = {}
    for name in dataset_types:
        types[name] = DatasetType(
            name, DIMENSIONS, "ExposureF", universe=butler.dimensions
        )
        reg.registerDatasetType(types[name])
    datasets = []
    for (name, visit, detector), path in files.items():
        ref = DatasetRef(
            types[name],
            {"instrument": instrument, "visit": visit, "detector": detector},
            run=RUN,
        )
        datasets.append(
            FileDataset(path=str(path), refs=[ref], formatter=FitsFileFormatter)
        )
    butler.ingest(*datasets, transfer=transfer)
    butler.close()
    return root
