"""A faithful local stand-in of the Zooniverse Panoptes API, for tests.

Start one (the ``panoptes_standin`` fixture in ``tests/plugins/panoptes.py``
does this for each test), point panoptes-client, panoptes-cli or zooprep at
``standin.url``, arm faults, then inspect what the clients did::

    from tests.panoptes_standin import PanoptesStandin

    with PanoptesStandin.with_defaults(latency=0.05) as standin:
        standin.faults.add("error_after", method="POST", path=r"^/api/subjects$")
        ...  # upload to standin.subject_set_id in project standin.project_id
        assert not standin.orphans() and not standin.broken()
        assert standin.duplicates("#zooprep_id") == {}

Standalone (for benchmarks)::

    python -m tests.panoptes_standin --port 8765 --latency 0.05

See `server` for the routes, `faults` for the fault kinds and `store` for
the snapshot types returned by the inspection methods.
"""

from .faults import KINDS, Fault, Faults
from .server import DEFAULT_CLIENT_IDS, PanoptesStandin
from .store import RequestRecord, SubjectSetView, SubjectView

__all__ = [
    "DEFAULT_CLIENT_IDS",
    "KINDS",
    "Fault",
    "Faults",
    "PanoptesStandin",
    "RequestRecord",
    "SubjectSetView",
    "SubjectView",
]
