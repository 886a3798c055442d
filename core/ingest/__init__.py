"""Import of real image datasets: folders, zip archives and Hugging Face datasets.

``import_dataset(path, ...)`` recognises the layout by itself (``layouts``), reads files
safely (``sources``), decodes them in a process pool and adds them in batches
(``importer``). ``core.ingest.jobs`` runs an import as a background job for the dashboard.
"""

from core.ingest.importer import ImportOptions, ImportReport, import_dataset  # noqa: F401
from core.ingest.sources import SourceError  # noqa: F401
