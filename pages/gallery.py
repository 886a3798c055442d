"""Gallery: filter, sort and page through the index; inspect, relabel, exclude, delete, export.

Filtering and paging happen in SQL (``core.gallery``); this page shows one page of cached
thumbnails at a time, so it stays quick at 100,000 images.
"""

from __future__ import annotations

import uuid

import streamlit as st

from core import gallery
from core.catalog import class_key
from core.store import ImageStore
from core.users.permissions import PermissionDenied, can_modify
from webui import boot, current_identity, escape_markdown

settings = boot()
identity = current_identity()
store = ImageStore(settings)

st.title("Gallery")

classes = gallery.classes(settings)
datasets = gallery.datasets(settings)
class_labels = {c.name: f"{c.display_name} ({c.name})" for c in classes}
dataset_labels = {d.id: f"{d.name} [{d.source}]" for d in datasets}
NO_SPLIT = "(no split)"

with st.sidebar.form("gallery_filters"):
    st.markdown("**Filter**")
    f_classes = st.multiselect("Class", list(class_labels), format_func=class_labels.get,
                               key="g_classes")
    f_sources = st.multiselect("Source", ["real", "synthetic"], key="g_sources")
    f_datasets = st.multiselect("Dataset", list(dataset_labels), format_func=dataset_labels.get,
                                key="g_datasets")
    f_splits = st.multiselect("Split", [*gallery.splits(settings), NO_SPLIT], key="g_splits")
    f_prompt = st.text_input("Prompt contains", key="g_prompt")
    f_excluded = st.radio("Excluded images", ["hide", "show too", "only"], horizontal=True,
                          key="g_excluded")
    f_sort = st.selectbox("Sort", list(gallery.SORTS), format_func=gallery.SORTS.get, key="g_sort")
    f_size = st.select_slider("Per page", [12, 24, 48, 96], value=24, key="g_page_size")
    st.form_submit_button("Apply")

flt = gallery.GalleryFilter(
    classes=f_classes, sources=f_sources, datasets=f_datasets,
    splits=["" if s == NO_SPLIT else s for s in f_splits], prompt_contains=f_prompt,
    include_excluded=f_excluded == "show too", only_excluded=f_excluded == "only")

# A new filter starts again at page 1.
filter_key = repr((flt, f_sort, f_size))
if st.session_state.get("g_filter_key") != filter_key:
    st.session_state["g_filter_key"] = filter_key
    st.session_state["g_page"] = 1

total = gallery.count(flt, settings)
pages = max(1, -(-total // f_size))
st.session_state["g_page"] = min(max(1, st.session_state.get("g_page", 1)), pages)
# Next/previous seek from the row at the edge of the page shown (keyset: as quick on page
# 2,000 as on page 2); a page typed into the box is read by offset.
cursor = st.session_state.get("g_cursor") or {}
if cursor.get("filter") != filter_key or cursor.get("page") != st.session_state["g_page"]:
    cursor = {}
result = gallery.page(flt, sort=f_sort, offset=(st.session_state["g_page"] - 1) * f_size,
                      limit=f_size, total=total, after=cursor.get("after"),
                      before=cursor.get("before"), settings=settings)
nav = st.columns([1, 1, 2, 4])


def _turn(step: int, edge: gallery.ImageRow | None) -> None:
    # A callback, so the buttons below are drawn with the new page's state. ``edge``: the
    # last row shown (next) or the first (previous), where the new page's seek starts.
    st.session_state["g_page"] = min(max(1, st.session_state["g_page"] + step), pages)
    st.session_state["g_cursor"] = edge and {"filter": filter_key, "page": st.session_state["g_page"],
                                             "after" if step > 0 else "before": edge}


nav[0].button("‹ Previous", disabled=st.session_state["g_page"] <= 1, key="g_prev",
              on_click=_turn, args=(-1, result.rows[0] if result.rows else None))
nav[1].button("Next ›", disabled=st.session_state["g_page"] >= pages, key="g_next",
              on_click=_turn, args=(1, result.rows[-1] if result.rows else None))
nav[2].number_input("Page", min_value=1, max_value=pages, key="g_page", label_visibility="collapsed")
nav[3].markdown(f"**{total:,}** images · page {st.session_state['g_page']} of {pages}")


def _select(image_id: int) -> None:
    st.session_state["g_selected"] = image_id


def _delete(image_id: int) -> None:
    # A callback: it runs before the widgets exist, so it may reset the confirmation box.
    try:
        gallery.delete_images([image_id], actor=identity, settings=settings)
    except PermissionDenied as exc:
        st.session_state["g_delete_error"] = str(exc)
        return
    st.session_state.pop("g_selected", None)
    st.session_state["g_confirm_delete"] = False


# --- the selected image -----------------------------------------------------------------
COLUMNS = 6
selected = st.session_state.get("g_selected")
detail = gallery.image_detail(selected, settings) if selected else None
if detail is not None:
    with st.container(border=True):
        st.subheader(f"Image #{detail['id']}: {escape_markdown(detail['class_display_name'])}")
        left, right = st.columns([1, 2])
        try:
            left.image(str(store.abspath(detail["path"])), width="stretch")
        except (OSError, ValueError):
            left.error("The file of this image is missing; run `python -m core check`.")
        right.dataframe(
            {"field": list(detail), "value": [str(v) if v is not None else "" for v in detail.values()]},
            hide_index=True, width="stretch", height=420)
        # What this user may not do is shown disabled with the reason, not refused after
        # the click (core still checks at the moment of the action).
        owner = detail.get("added_by")
        may_change = can_modify(identity, owner, "relabel")
        not_yours = None if may_change else (
            f"Only {escape_markdown(owner or 'its importer')} (who added this image) or an admin "
            "can change it.")
        actions = st.columns(3)
        with actions[0].form("g_relabel_form"):
            new_class = st.selectbox("Relabel as", list(class_labels), format_func=class_labels.get,
                                     index=list(class_labels).index(detail["class"])
                                     if detail["class"] in class_labels else 0, key="g_relabel_to")
            other = st.text_input("or a new class", key="g_relabel_new")
            if st.form_submit_button("Relabel", disabled=not may_change, help=not_yours):
                target = other.strip() or new_class
                if class_key(target) == detail["class"]:
                    st.info("The image already has this class: pick another one or type a new "
                            "class.")
                else:
                    try:
                        gallery.relabel([detail["id"]], target, actor=identity, settings=settings)
                        st.session_state["g_relabel_done"] = target
                        st.rerun()
                    except (PermissionDenied, ValueError) as exc:
                        st.error(escape_markdown(exc))
            done = st.session_state.pop("g_relabel_done", None)
            if done:
                st.success(f"Relabelled as {escape_markdown(done)}.")
        with actions[1]:
            label = "Restore" if detail["excluded"] else "Exclude"
            st.caption("Excluded images stay stored but leave views and training sets.")
            if st.button(label, key="g_toggle_excluded", disabled=not may_change, help=not_yours):
                try:
                    gallery.set_excluded([detail["id"]], not detail["excluded"], actor=identity,
                                         settings=settings)
                    st.rerun()
                except PermissionDenied as exc:
                    st.error(escape_markdown(exc))
        with actions[2]:
            confirm = st.checkbox("Yes, delete this image and its file", key="g_confirm_delete",
                                  disabled=not may_change)
            st.button("Delete", type="primary", disabled=not (confirm and may_change),
                      key="g_delete", help=not_yours, on_click=_delete, args=(detail["id"],))
            if st.session_state.get("g_delete_error"):
                st.error(escape_markdown(st.session_state.pop("g_delete_error")))
        near = gallery.near_duplicates(detail["id"], settings)
        if near:
            shown = near[:COLUMNS * 2]
            more = f", the closest {len(shown)} shown" if len(shown) < len(near) else ""
            st.markdown(f"**Near-duplicates** ({len(near)}{more}): resized, re-encoded or "
                        "cropped copies. A split keeps those of the same class on this image's "
                        "side; one under another class is probably mislabelled.")
            cells = st.columns(COLUMNS)
            for k, (image, distance) in enumerate(shown):
                with cells[k % COLUMNS]:
                    try:
                        st.image(str(store.thumbnail_path(image.path)), width="stretch")
                    except (OSError, ValueError):
                        st.error("file missing")
                    st.caption(f"distance {distance} · "
                               f"{escape_markdown(image.image_class.display_name)} · "
                               f"{image.source} · {escape_markdown(image.dataset.name)}")
                    st.button(f"#{image.id}", key=f"g_near_{image.id}", on_click=_select,
                              args=(image.id,), help="Show details")
        else:
            st.caption("No near-duplicates of this image in the index.")
        st.button("Close", key="g_close", on_click=_select, args=(None,))

# --- the grid ---------------------------------------------------------------------------
if not result.rows:
    st.info("No images match. Import some on the **Import** page, or change the filter.")
for start in range(0, len(result.rows), COLUMNS):
    cells = st.columns(COLUMNS)
    for cell, row in zip(cells, result.rows[start:start + COLUMNS], strict=False):
        with cell:
            try:
                st.image(str(store.thumbnail_path(row.path)), width="stretch")
            except (OSError, ValueError):
                st.error("file missing")
            note = " · excluded" if row.excluded else ""
            split = f" · {escape_markdown(row.split)}" if row.split else ""
            st.caption(f"{escape_markdown(row.class_display)} · {row.source}{split}{note}")
            st.button(f"#{row.id}", key=f"g_open_{row.id}", on_click=_select, args=(row.id,),
                      help="Show details")

# --- every filtered image at once -------------------------------------------------------
st.divider()
with st.expander(f"Change all {total:,} filtered images"):
    with st.form("g_bulk_form"):
        bulk_action = st.radio("Action", ["Exclude", "Restore", "Relabel"], horizontal=True,
                               key="g_bulk_action")
        bulk_class = st.text_input("New class (for Relabel)", key="g_bulk_class")
        bulk_confirm = st.checkbox(f"Yes, change all {total:,} images that match the filter",
                                   key="g_bulk_confirm")
        if st.form_submit_button("Apply to all filtered images"):
            if not bulk_confirm:
                st.error("Tick the confirmation first.")
            elif bulk_action == "Relabel" and not bulk_class.strip():
                st.error("Enter the new class.")
            else:
                try:
                    changed = gallery.update_filtered(
                        flt, excluded={"Exclude": True, "Restore": False}.get(bulk_action),
                        class_name=bulk_class.strip() if bulk_action == "Relabel" else None,
                        actor=identity, settings=settings)
                    st.session_state["g_bulk_done"] = f"{bulk_action}: {changed:,} images changed."
                    st.rerun()
                except (PermissionDenied, ValueError) as exc:
                    st.error(escape_markdown(exc))
if st.session_state.get("g_bulk_done"):
    st.success(st.session_state.pop("g_bulk_done"))

# --- export -----------------------------------------------------------------------------
st.markdown(f"**Download the filtered set** ({total:,} images) as a zip in ImageFolder "
            "layout (`<class>/<file>`).")
if st.button("Prepare zip", key="g_export", disabled=total == 0):
    exports = settings.cache_dir / "exports"
    exports.mkdir(parents=True, exist_ok=True)
    previous = st.session_state.get("g_export_path")
    if previous:
        (exports / previous).unlink(missing_ok=True)
    name = f"synthlab-{uuid.uuid4().hex[:8]}.zip"
    with st.spinner("Writing the zip..."):
        summary = gallery.export_zip(flt, exports / name, settings=settings)
    st.session_state["g_export_path"] = name
    st.session_state["g_export_summary"] = summary
if st.session_state.get("g_export_path"):
    path = settings.cache_dir / "exports" / st.session_state["g_export_path"]
    if path.is_file():
        summary = st.session_state.get("g_export_summary", {})
        st.download_button(f"Download {summary.get('images', '?')} images ({path.stat().st_size / 2**20:.1f} MB)",
                           data=path.read_bytes(), file_name="synthlab-export.zip",
                           mime="application/zip", key="g_download")
