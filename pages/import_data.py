"""Import: upload images or a zip, or name a folder on the server or a Hugging Face dataset.

The import itself runs as a background job (``core.ingest.jobs``); this page only stages
uploads, submits the job and shows its progress and report.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from core import jobs
from core.imageio import IMAGE_EXTENSIONS
from core.ingest.huggingface import check_hub_id
from core.ingest.jobs import KIND, stage_uploads, submit_import
from core.ingest.known_datasets import KNOWN_DATASETS, submit_known
from core.ingest.sources import SourceError
from core.users.permissions import PermissionDenied, require
from core.wording import plural
from webui import boot, current_identity, current_user, error_text, escape_markdown
from webui.jobs import live_fragment, render_job_list
from webui.uploads import release_uploads

settings = boot()
user = current_user()

st.title("Import a dataset")
st.caption("The layout is recognised by itself: class folders (`apple/*.jpg`), Fruits-360 "
           "(`Training/<class>`, `Test/<class>`), flat files named by class (`apple_12.jpg`, "
           "with Pascal VOC `.xml` boxes) or a Hugging Face image-classification dataset. "
           "Every image is decoded and checked; bad files are listed with a reason and skipped.")

FROM_UPLOAD, FROM_FOLDER = "Upload files", "Upload a folder"
FROM_PATH, FROM_HF = "Folder or zip on the server", "Hugging Face dataset"
UPLOAD_TYPES = ["zip", "xml", *sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS)]

# Outside the form, so that only the chosen source's input is shown.
origin = st.radio("From", [FROM_UPLOAD, FROM_FOLDER, FROM_PATH, FROM_HF], horizontal=True,
                  key="import_from")
uploads = folder_upload = None
server_path = hub = ""
with st.form("import_form"):
    if origin == FROM_UPLOAD:
        uploads = st.file_uploader(
            "Images (with their VOC .xml files), or one .zip of a whole dataset",
            type=UPLOAD_TYPES, accept_multiple_files=True, key="import_uploads",
            max_upload_size=settings.max_upload_mb)
    elif origin == FROM_FOLDER:
        folder_upload = st.file_uploader(
            "A whole folder (its sub-folders are kept: class folders, Training/Test, ...)",
            type=UPLOAD_TYPES, accept_multiple_files="directory", key="import_folder",
            max_upload_size=settings.max_upload_mb)
    elif origin == FROM_PATH:
        server_path = st.text_input("Server path (a folder or a .zip)", key="import_path",
                                    placeholder="/data/fruits-360")
    else:
        hub = st.text_input("Hugging Face dataset: a Hub id (needs a network; a save_to_disk "
                            "folder is a server path)", key="import_hub",
                            placeholder="user/fruit-dataset")
    cols = st.columns(3)
    dataset = cols[0].text_input("Dataset name", key="import_dataset",
                                 placeholder="default: the folder or file name")
    source = cols[1].selectbox("Source", ["real", "synthetic"], key="import_source")
    force_class = cols[2].text_input("Give every image this class (optional)", key="import_class",
                                     help="For a flat folder of one fruit whose file names "
                                          "do not start with the class.")
    crop_boxes = st.checkbox("Import each Pascal VOC box as a cropped object image",
                             key="import_crop")
    submitted = st.form_submit_button("Import", type="primary")


def _target() -> str | None:
    """The path or id to import, after staging uploads; None (with a message) if unusable."""
    if origin in (FROM_UPLOAD, FROM_FOLDER):
        chosen = uploads if origin == FROM_UPLOAD else folder_upload
        if not chosen:
            st.error("Choose the files to upload first." if origin == FROM_UPLOAD
                     else "Choose a folder to upload first.")
            return None
        try:
            staged = str(stage_uploads([(f.name, f.getvalue()) for f in chosen], settings))
        except (ValueError, OSError) as exc:
            st.error(f"Upload failed: {escape_markdown(exc)}")
            return None
        finally:
            # On disk now (or refused): the server's memory copy is not needed any more.
            release_uploads(chosen)
        return staged
    text = (server_path if origin == FROM_PATH else hub).strip()
    if not text:
        st.error("Enter a path." if origin == FROM_PATH else "Enter a Hub id.")
        return None
    if origin == FROM_HF:
        # A Hub id only, never a folder here (core checks it again: hub_only); server
        # folders go through the admin-only server-path import.
        try:
            check_hub_id(text)
        except SourceError as exc:
            st.error(error_text(exc))
            return None
        return text
    path = Path(text).expanduser()
    if path.exists():
        try:
            require(current_identity(), None, "import_server_path")
        except PermissionDenied:
            st.error("Reading a folder on the server is reserved to admins when sign-in is on. "
                     "Upload the files instead.")
            return None
        if path.is_dir() or path.suffix.lower() == ".zip":
            return str(path)
        st.error(f"Not a folder or a .zip file: {escape_markdown(text)}")
        return None
    st.error(f"Path does not exist on the server: {escape_markdown(text)}")
    return None


if submitted:
    target = _target()
    if target is not None:
        job_id = submit_import(target, dataset=dataset.strip() or None, source=source,
                               force_class=force_class.strip() or None, crop_boxes=crop_boxes,
                               user=current_identity(), settings=settings,
                               hub_only=origin == FROM_HF)
        st.session_state["import_job"] = job_id
        st.success(f"Import queued as job #{job_id}. It runs in the background; you can leave "
                   "this page.")


with st.expander("Start with a public fruit dataset: import it from the Hugging Face Hub "
                 "in one click"):
    for known in KNOWN_DATASETS:
        with st.container(border=True):
            st.markdown(f"**{escape_markdown(known.title)}** · `{known.hub_id}` · "
                        f"[dataset card]({known.url})")
            st.caption(f"{escape_markdown(known.description)}  \n"
                       f"Classes: {escape_markdown(known.classes)}  \n"
                       f"Size: {escape_markdown(known.size)} · Licence: "
                       f"{escape_markdown(known.licence)} · Imported as "
                       f"{known.source} dataset `{known.dataset_name}`")
            if st.button(f"Import {known.dataset_name}", key=f"import_known_{known.dataset_name}"):
                try:
                    job_id = submit_known(known.hub_id, user=current_identity(),
                                          settings=settings)
                except SourceError as exc:
                    st.error(error_text(exc))
                else:
                    st.session_state["import_job"] = job_id
                    st.success(f"Import of {known.hub_id} queued as job #{job_id}. It runs in "
                               "the background; you can leave this page.")


@live_fragment((KIND,), 2.0)
def _report() -> None:
    job_id = st.session_state.get("import_job")
    if job_id is None:
        latest = jobs.list_jobs(kind=KIND, limit=1, settings=settings)
        job_id = latest[0].id if latest else None
    if job_id is None:
        return
    job = jobs.get_job(job_id, settings)
    if job is None:
        return
    st.subheader(f"Import #{job.id}: {escape_markdown(job.title)}")
    if job.status in jobs.ACTIVE_STATUSES:
        total = max(1, job.progress_total)
        st.progress(min(1.0, job.progress_done / total),
                    text=job.message or f"{job.status}...")
        return
    if job.status == jobs.FAILED:
        st.error(f"The import failed. {error_text(job.error)}")
        return
    if job.status == jobs.CANCELLED:
        st.warning("The import was cancelled; the images added before that are kept.")
    result = job.result or {}
    if not result:
        return
    st.markdown(f"Dataset **{escape_markdown(result['dataset'])}** ({result['layout']} layout)")
    near_pairs = result.get("near_duplicate_pairs", 0)
    cols = st.columns(4 if near_pairs else 3)  # the fourth only when there is something to see
    cols[0].metric("Added", result["added"])
    cols[1].metric("Duplicates", result["duplicates"])
    cols[2].metric("Rejected", len(result["rejected"]))
    if near_pairs:
        cols[3].metric("Near-duplicates", near_pairs,
                       help="Pairs of resized, re-encoded or cropped copies among the added "
                            "images or of images already indexed; a split keeps copies of one "
                            "class on one side.")
    if result.get("per_class"):
        st.dataframe(pd.DataFrame(sorted(result["per_class"].items()), columns=["class", "added"]),
                     hide_index=True)
    if result["rejected"]:
        st.markdown("**Rejected files**")
        # A table, not a data grid: the grid cuts each cell to one line, and the reason is
        # what the user needs whole. A long list scrolls in its own box. A long file name
        # has no space to wrap at: it breaks anywhere rather than being cut at the cell.
        with st.container(key="import_rejected"):
            st.html("<style>.st-key-import_rejected td * { overflow-wrap: anywhere !important; }</style>")
            st.table(pd.DataFrame(result["rejected"]), hide_index=True,
                     height=420 if len(result["rejected"]) > 10 else "content")
    if result.get("added_files"):
        listed = len(result["added_files"])
        more = f", first {listed} listed" if listed < result["added"] else ""
        with st.expander(f"Added files ({result['added']}{more})"):
            st.dataframe(pd.DataFrame(result["added_files"]), hide_index=True, width="stretch")
    if result.get("duplicate_files"):
        with st.expander(f"Duplicates ({result['duplicates']}): already in the index"):
            st.dataframe(pd.DataFrame(result["duplicate_files"]), hide_index=True)
    if result.get("near_duplicates"):
        listed = len(result["near_duplicates"])
        more = f", closest {listed} listed" if listed < near_pairs else ""
        with st.expander(f"Near-duplicates ({plural(near_pairs, 'pair')}{more})"):
            st.dataframe(pd.DataFrame(result["near_duplicates"]), hide_index=True, width="stretch")


_report()

st.subheader("Import jobs")
render_job_list((KIND,), user=user, limit=5, key="import-jobs")
