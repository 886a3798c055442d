"""Gallery: filter, sort and page through the index; inspect, relabel, exclude, delete, export.

Filtering and paging happen in SQL (``core.gallery``); this page shows one page of cached
square thumbnails at a time, so it stays quick at 100,000 images. Clicking a thumbnail
opens the image above the grid; Previous/Next there walk the filtered, sorted list.
Every change says what it did, with an Undo (deleting asks first instead).
"""

from __future__ import annotations

import uuid

import streamlit as st

from core import gallery, gallery_export
from core.catalog import class_key
from core.store import ImageStore
from core.users.permissions import PermissionDenied, can_modify
from core.wording import plural
from webui import boot, current_identity, error_text, escape_markdown
from webui.gallery import DETAIL_FIRST_FIELDS, detail_facts, grid_style
from webui.cached import image_splits

settings = boot()
identity = current_identity()
store = ImageStore(settings)

st.title("Gallery")
grid_style()

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
    f_splits = st.multiselect("Split", [*image_splits(settings), NO_SPLIT], key="g_splits")
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

# Next/previous seek from the row at the edge of the page shown (keyset: as quick on page
# 2,000 as on page 2); a page typed into the box is read by offset. The page brings its
# total (a prompt search then searches its index once per render, not for a count first).
requested = max(1, st.session_state.get("g_page", 1))
cursor = st.session_state.get("g_cursor") or {}
if cursor.get("filter") != filter_key or cursor.get("page") != requested:
    cursor = {}
result = gallery.page(flt, sort=f_sort, offset=(requested - 1) * f_size, limit=f_size,
                      after=cursor.get("after"), before=cursor.get("before"), settings=settings)
total = result.total
pages = max(1, -(-total // f_size))
st.session_state["g_page"] = min(requested, pages)
if st.session_state["g_page"] != requested:
    # Fewer pages than before (images went meanwhile): show the last one there is.
    result = gallery.page(flt, sort=f_sort, offset=(pages - 1) * f_size, limit=f_size,
                          total=total, settings=settings)
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
nav[3].markdown(f"**{plural(total, 'image')}** · page {st.session_state['g_page']} of {pages}")

page_ids = [row.id for row in result.rows]
# Next/Previous in the detail view stepped over the page's edge: open the first (or last)
# image of the page it turned to.
edge = st.session_state.pop("g_select_edge", None)
if edge and page_ids:
    st.session_state["g_selected"] = page_ids[0] if edge == "first" else page_ids[-1]


# --- actions: each one says what it did and offers Undo ----------------------------------

def _done(message: str, before: dict[int, tuple[str, bool]] | None = None) -> None:
    """Remember the last change for the banner (with Undo when ``before`` is given).

    ``message`` is markdown: user text in it must already be escaped."""
    st.session_state["g_last_action"] = {"message": message, "before": before}
    st.session_state["g_toast"] = message


def _failed(exc: Exception) -> None:
    st.session_state["g_action_error"] = str(exc)


def _select(image_id: int | None) -> None:
    st.session_state["g_selected"] = image_id


def _step(ids: list[int], index: int, step: int) -> None:
    """Open the previous/next image of the filtered, sorted list, turning the page if needed."""
    target = index + step
    if 0 <= target < len(ids):
        st.session_state["g_selected"] = ids[target]
    elif target < 0 and st.session_state["g_page"] > 1:
        st.session_state["g_page"] -= 1
        st.session_state["g_select_edge"] = "last"
    elif target >= len(ids) and st.session_state["g_page"] < pages:
        st.session_state["g_page"] += 1
        st.session_state["g_select_edge"] = "first"


def _set_excluded(image_id: int, excluded: bool) -> None:
    try:
        before = gallery.curation_state([image_id], settings=settings)
        gallery.set_excluded([image_id], excluded, actor=identity, settings=settings)
    except PermissionDenied as exc:
        _failed(exc)
        return
    verb = "Excluded" if excluded else "Included"
    _done(f"{verb} {plural(1, 'image')} (#{image_id}).", before)


def _delete(image_id: int) -> None:
    # A callback: it runs before the widgets exist, so it may reset the confirmation box.
    try:
        gallery.delete_images([image_id], actor=identity, settings=settings)
    except PermissionDenied as exc:
        _failed(exc)
        return
    st.session_state.pop("g_selected", None)
    st.session_state["g_confirm_delete"] = False
    _done(f"Deleted {plural(1, 'image')} (#{image_id}) and its file. Deleting cannot be undone.")


def _undo() -> None:
    last = st.session_state.get("g_last_action") or {}
    try:
        count = gallery.revert(last.get("before") or {}, actor=identity, settings=settings)
    except PermissionDenied as exc:
        _failed(exc)
        return
    _done(f"Undone: {plural(count, 'image')} back as before.")


def _dismiss() -> None:
    st.session_state.pop("g_last_action", None)


if st.session_state.get("g_toast"):
    st.toast(st.session_state.pop("g_toast"))
last_action = st.session_state.get("g_last_action")
if last_action:
    with st.container(border=True, key="g_last"):
        said, undo, dismiss = st.columns([6, 1, 1], vertical_alignment="center")
        said.success(last_action["message"])
        if last_action.get("before"):
            undo.button("Undo", key="g_undo", on_click=_undo, width="stretch")
        dismiss.button("Dismiss", key="g_dismiss", on_click=_dismiss, width="stretch")
if st.session_state.get("g_action_error"):
    st.error(error_text(st.session_state.pop("g_action_error")))


# --- the selected image -----------------------------------------------------------------
COLUMNS = 6


selected = st.session_state.get("g_selected")
detail = gallery.image_detail(selected, settings) if selected else None
if detail is not None:
    with st.container(border=True, key="g_detail"):
        title, back, forward, close = st.columns([6, 1, 1, 1], vertical_alignment="bottom")
        title.subheader(f"Image #{detail['id']}: {escape_markdown(detail['class_display_name'])}")
        # Where the image sits in the list. One that just left it (excluded, or relabelled
        # out of the filter) keeps its place, so Next goes on to the image now there.
        spot = st.session_state.get("g_detail_spot")
        if detail["id"] in page_ids:
            index = page_ids.index(detail["id"])
            st.session_state["g_detail_spot"] = (detail["id"], st.session_state["g_page"], index)
            before_index, after_index = index, index
            title.caption(f"{result.offset + index + 1:,} of {plural(total, 'image')} in this list")
        elif spot and spot[0] == detail["id"] and spot[1] == st.session_state["g_page"]:
            before_index, after_index = spot[2], spot[2] - 1
            title.caption("No longer on this page of the list (a change moved it).")
        else:
            before_index = after_index = None
            title.caption("Not on the current page of the list.")
        if before_index is not None:
            first = result.offset + before_index <= 0
            last = result.offset + after_index + 1 >= total
            back.button("‹ Previous", key="g_detail_prev", on_click=_step,
                        args=(page_ids, before_index, -1), disabled=first, width="stretch")
            forward.button("Next ›", key="g_detail_next", on_click=_step,
                           args=(page_ids, after_index, 1), disabled=last, width="stretch")
        close.button("Close", key="g_close", on_click=_select, args=(None,), width="stretch")
        left, right = st.columns([1, 1])
        with left.container(key="g_detail_image"):  # at most 70% of the window high
            try:
                st.image(str(store.abspath(detail["path"])), width="stretch")
            except (OSError, ValueError):
                st.error("The file of this image is missing; run `python -m core check`.")
        right.markdown(detail_facts(detail))
        # What this user may not do is shown disabled with the reason, not refused after
        # the click (core still checks at the moment of the action).
        owner = detail.get("added_by")
        may_change = can_modify(identity, owner, "relabel")
        not_yours = None if may_change else (
            f"Only {escape_markdown(owner or 'its importer')} (who added this image) or an admin "
            "can change it.")
        with right.form("g_relabel_form"):
            new_class = st.selectbox("Relabel as", list(class_labels), format_func=class_labels.get,
                                     index=list(class_labels).index(detail["class"])
                                     if detail["class"] in class_labels else 0, key="g_relabel_to")
            other = st.text_input("or a new class", key="g_relabel_new")
            if st.form_submit_button("Relabel", disabled=not may_change, help=not_yours):
                target = other.strip() or new_class
                try:
                    same = class_key(target) == detail["class"]
                except ValueError as exc:
                    st.error(error_text(exc))
                    same = None
                if same:
                    st.info("The image already has this class: pick another one or type a new "
                            "class.")
                elif same is False:
                    try:
                        before = gallery.curation_state([detail["id"]], settings=settings)
                        gallery.relabel([detail["id"]], target, actor=identity, settings=settings)
                        _done(f"Relabelled {plural(1, 'image')} (#{detail['id']}) from "
                              f"{escape_markdown(detail['class_display_name'])} to "
                              f"{escape_markdown(target)}.", before)
                        st.rerun()
                    except (PermissionDenied, ValueError) as exc:
                        st.error(error_text(exc))
        toggle, remove = right.columns(2)
        with toggle:
            if detail["excluded"]:
                st.button("Include", key="g_toggle_excluded", disabled=not may_change,
                          help=not_yours or "Bring it back into views and training sets.",
                          on_click=_set_excluded, args=(detail["id"], False))
            else:
                st.button("Exclude", key="g_toggle_excluded", disabled=not may_change,
                          help=not_yours or "Excluded images stay stored but leave views and "
                          "training sets.", on_click=_set_excluded, args=(detail["id"], True))
        with remove:
            confirm = st.checkbox("Yes, delete this image and its file", key="g_confirm_delete",
                                  disabled=not may_change)
            st.button("Delete", type="primary", disabled=not (confirm and may_change),
                      key="g_delete", help=not_yours, on_click=_delete, args=(detail["id"],))
        with st.expander("Hashes, paths and every stored field"):
            rest = {key: value for key, value in detail.items() if key not in DETAIL_FIRST_FIELDS}
            try:
                rest["file on disk"] = str(store.abspath(detail["path"]))
            except ValueError:
                rest["file on disk"] = "(outside the data folder)"
            st.dataframe({"field": list(rest),
                          "value": ["" if v is None else str(v) for v in rest.values()]},
                         hide_index=True, width="stretch")
        near = gallery.near_duplicates(detail["id"], settings)
        if near:
            shown = near[:COLUMNS * 2]
            more = f", the closest {len(shown)} shown" if len(shown) < len(near) else ""
            st.markdown(f"**Near-duplicates** ({len(near)}{more}): resized, re-encoded or "
                        "cropped copies. A split keeps those of the same class on this image's "
                        "side; one under another class is probably mislabelled.")
            cells = st.columns(COLUMNS)
            for k, (image, distance) in enumerate(shown):
                with cells[k % COLUMNS].container(key=f"g_ncell_{image.id}"):
                    try:
                        st.image(str(store.square_thumbnail_path(image.path)), width="stretch")
                    except (OSError, ValueError):
                        st.error("File missing.")
                    st.button(f"#{image.id}", key=f"g_near_{image.id}", on_click=_select,
                              args=(image.id,))
                    st.caption(f"distance {distance} · "
                               f"{escape_markdown(image.image_class.display_name)} · "
                               f"{image.source} · {escape_markdown(image.dataset.name)}")
        else:
            st.caption("No near-duplicates of this image in the index.")

# --- the grid ---------------------------------------------------------------------------
if not result.rows:
    st.info("No images match. Import some on the **Import** page, or change the filter.")
for start in range(0, len(result.rows), COLUMNS):
    cells = st.columns(COLUMNS)
    for cell, row in zip(cells, result.rows[start:start + COLUMNS], strict=False):
        # The selected image's cell has its own key prefix, which the style above outlines.
        prefix = "g_cellsel_" if row.id == selected else "g_cell_"
        with cell.container(key=f"{prefix}{row.id}"):
            try:
                st.image(str(store.square_thumbnail_path(row.path)), width="stretch")
            except (OSError, ValueError):
                st.error("File missing.")
            st.button(f"#{row.id}", key=f"g_open_{row.id}", on_click=_select, args=(row.id,))
            note = " · excluded" if row.excluded else ""
            split = f" · {escape_markdown(row.split)}" if row.split else ""
            st.caption(f"{escape_markdown(row.class_display)} · {row.source}{split}{note}")

# --- every filtered image at once -------------------------------------------------------
BULK_VERBS = {"Exclude": "Excluded", "Include": "Included", "Relabel": "Relabelled"}
st.divider()
with st.expander(f"Change all {plural(total, 'filtered image')}"):
    with st.form("g_bulk_form"):
        bulk_action = st.radio("Action", list(BULK_VERBS), horizontal=True, key="g_bulk_action")
        bulk_class = st.text_input("New class (for Relabel)", key="g_bulk_class")
        bulk_confirm = st.checkbox(
            f"Yes, change {'the' if total == 1 else 'all'} {plural(total, 'image')} that "
            f"{'matches' if total == 1 else 'match'} the filter", key="g_bulk_confirm")
        if st.form_submit_button("Apply to all filtered images"):
            if not bulk_confirm:
                st.error("Tick the confirmation first.")
            elif bulk_action == "Relabel" and not bulk_class.strip():
                st.error("Enter the new class.")
            else:
                try:
                    # Only the images this action changes are kept for Undo.
                    state = gallery.curation_state(flt=flt, settings=settings)
                    if bulk_action == "Relabel":
                        new_key = class_key(bulk_class)
                        before = {i: s for i, s in state.items() if s[0] != new_key}
                    else:
                        before = {i: s for i, s in state.items()
                                  if s[1] != (bulk_action == "Exclude")}
                    changed = gallery.update_filtered(
                        flt, excluded={"Exclude": True, "Include": False}.get(bulk_action),
                        class_name=bulk_class.strip() if bulk_action == "Relabel" else None,
                        actor=identity, settings=settings)
                    target = (f" as {escape_markdown(bulk_class.strip())}"
                              if bulk_action == "Relabel" else "")
                    _done(f"{BULK_VERBS[bulk_action]} {plural(changed, 'image')}{target}.", before)
                    st.rerun()
                except (PermissionDenied, ValueError) as exc:
                    st.error(error_text(exc))

# --- export -----------------------------------------------------------------------------
st.markdown(f"**Download the filtered set** ({plural(total, 'image')}) as a zip in ImageFolder "
            "layout (`<class>/<source>_<dataset>_<id>.<ext>`) with a `labels.csv` of every "
            "image's class, source, dataset, split, prompt, seed, model and size.")
if st.button("Prepare zip", key="g_export", disabled=total == 0):
    exports = settings.cache_dir / "exports"
    exports.mkdir(parents=True, exist_ok=True)
    previous = st.session_state.get("g_export_path")
    if previous:
        (exports / previous).unlink(missing_ok=True)
    name = f"synthlab-{uuid.uuid4().hex[:8]}.zip"
    with st.spinner("Writing the zip..."):
        summary = gallery_export.export_zip(flt, exports / name, settings=settings)
    st.session_state["g_export_path"] = name
    st.session_state["g_export_summary"] = summary
if st.session_state.get("g_export_path"):
    path = settings.cache_dir / "exports" / st.session_state["g_export_path"]
    if path.is_file():
        summary = st.session_state.get("g_export_summary", {})
        images = plural(summary["images"], "image") if "images" in summary else "the images"
        st.download_button(f"Download {images} ({path.stat().st_size / 2**20:.1f} MB)",
                           data=path.read_bytes(), file_name="synthlab-export.zip",
                           mime="application/zip", key="g_download")
