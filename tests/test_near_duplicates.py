"""Near-duplicate detection (issue 11): perceptual hashes at import, the Hamming search,
the import report, the Gallery, and splits that never put copies on both sides.

Every image is made here with PIL: ``scene`` draws a photo-like picture (smooth colour
fields at several scales); copies are 0.5x and 2x resizes, JPEG q=60 re-encodes of a PNG,
and 3% / 5% centred crops.
"""

from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.imagemaker import fruit_image

ROOT = Path(__file__).resolve().parent.parent


def scene(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A photo-like picture: coloured noise smoothed at four scales."""
    rng = np.random.default_rng(seed)
    width, height = size
    out = np.zeros((height, width, 3))
    for cells, weight in ((4, 1.0), (8, 0.5), (16, 0.25), (32, 0.12)):
        small = rng.normal(0, 1, (max(2, cells * height // width), cells, 3))
        small = ((small - small.min()) / (np.ptp(small) + 1e-9) * 255).astype(np.uint8)
        out += weight * np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BICUBIC),
                                   dtype=float)
    out = (out - out.min()) / np.ptp(out) * 255
    return Image.fromarray(out.astype(np.uint8), "RGB")


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # lossless all the same, and quick
    return buffer.getvalue()


def jpeg(image: Image.Image, quality: int = 60) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def centre_crop(image: Image.Image, fraction: float) -> Image.Image:
    width, height = image.size
    dx, dy = max(1, round(width * fraction)), max(1, round(height * fraction))
    return image.crop((dx // 2, dy // 2, width - (dx - dx // 2), height - (dy - dy // 2)))


def copies(image: Image.Image) -> dict[str, bytes]:
    """The encoded copies of ``image`` that must count as near-duplicates."""
    width, height = image.size
    return {
        "half": png(image.resize((width // 2, height // 2), Image.Resampling.LANCZOS)),
        "double": png(image.resize((width * 2, height * 2), Image.Resampling.LANCZOS)),
        "jpeg60": jpeg(Image.open(io.BytesIO(png(image))).convert("RGB"), 60),
        "crop3": png(centre_crop(image, 0.03)),
        "crop5": png(centre_crop(image, 0.05)),
    }


def signature(data: bytes) -> tuple[int, str]:
    """What an import stores for these bytes: decoded like an import, then fingerprinted."""
    from core.imageio import decode_image
    from core.neardup import fingerprint

    return fingerprint(decode_image(data).image)


def is_near(a: tuple[int, str], b: tuple[int, str], settings) -> bool:  # noqa: ANN001
    from core.neardup import colour_difference, distance

    return (distance(a[0], b[0]) <= settings.near_duplicate_distance
            and colour_difference(a[1], b[1]) <= settings.near_duplicate_colour)


# --- the signatures and the default limits ------------------------------------------------

def test_copies_are_near_and_distinct_pictures_are_not():
    """The measurement behind the defaults (printed with ``-s``): copies within 10 bits and
    12 colour levels, distinct pictures 14+ bits apart, or, for look-alike pictures of one
    centred object, at least 15 colour levels apart."""
    import imagehash

    from core.config import Settings
    from core.neardup import colour_difference, distance, to_hex

    settings = Settings()
    assert (settings.near_duplicate_distance, settings.near_duplicate_colour) == (10, 12)
    worst: dict[str, tuple[int, int]] = {}
    originals = []
    for seed, size in itertools.product(range(8), [(64, 48), (160, 120), (400, 300)]):
        image = scene(seed, size)
        original = signature(png(image))
        assert to_hex(original[0]) == str(imagehash.phash(image))  # the stored bits are pHash's
        originals.append(original)
        for kind, data in copies(image).items():
            copy = signature(data)
            bits, tone = distance(original[0], copy[0]), colour_difference(original[1], copy[1])
            worst[kind] = tuple(max(pair) for pair in zip(worst.get(kind, (0, 0)), (bits, tone)))
            assert is_near(original, copy, settings), (kind, seed, size, bits, tone)
    print("\ncopies, worst (bits, colour):", worst)

    distinct = [signature(png(scene(seed))) for seed in range(100, 160)]
    closest = min(distance(a[0], b[0]) for a, b in itertools.combinations(distinct, 2))
    print("distinct pictures, closest pHash distance:", closest)
    assert closest > settings.near_duplicate_distance
    assert not any(is_near(a, b, settings) for a, b in itertools.combinations(distinct, 2))

    # One centred disc on a plain background: pHash alone takes many different pictures for
    # copies (they differ in colour, not in grayscale layout); the colour check does not.
    discs = [(label, signature(png(fruit_image(label, seed, (96, 72)))))
             for label in ("apple", "lime") for seed in range(40)]
    same_class = [(a[1], b[1]) for a, b in itertools.combinations(discs, 2) if a[0] == b[0]]
    look_alike = [(a, b) for a, b in same_class
                  if distance(a[0], b[0]) <= settings.near_duplicate_distance]
    print("look-alike disc pairs:", len(look_alike), "closest colour difference:",
          min(colour_difference(a[1], b[1]) for a, b in look_alike))
    assert look_alike and not any(is_near(a, b, settings) for a, b in same_class)


def test_search_finds_exactly_the_pairs_of_a_full_comparison():
    from core import neardup

    rng = np.random.default_rng(7)
    hashes = rng.integers(0, 2**64, size=3000, dtype=np.uint64)
    hashes[2900:] = hashes[:100] ^ np.uint64(0b1011)  # 100 planted copies, 3 bits off
    signed = hashes.view(np.int64)
    full = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    want = {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(full <= 10, k=1)), strict=True)}
    pairs = neardup.pairs_within(signed, 10)
    got = set(zip(pairs.left.tolist(), pairs.right.tolist(), strict=True))
    assert got == want and {(k, 2900 + k) for k in range(100)} <= got
    assert all(full[i, j] == d for i, j, d in zip(pairs.left, pairs.right, pairs.distance,
                                                  strict=True))
    # Python ints (signed, as stored) and the unsigned view give the same answer.
    between = neardup.pairs_between([int(v) for v in signed[2900:2910]], hashes, 10)
    assert {(int(i), int(j)) for i, j in zip(between.left, between.right, strict=True)} >= {
        (k, k) for k in range(10)}
    labels = neardup.group_labels(signed, 10, keys=[k % 2 for k in range(3000)])
    # Copy 2900 + k shares a component with k only when both have the same key.
    assert all((labels[k] == labels[2900 + k]) == (k % 2 == (2900 + k) % 2) for k in range(100))
    assert neardup.pairs_within(signed, -1).left.size == 0  # -1: detection off
    assert neardup.distance(-1, 0) == 64 and neardup.to_hex(-1) == "f" * 16


# --- import, backfill, migration ---------------------------------------------------------

def _folder(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def test_import_reports_near_duplicates_within_and_against_the_index(settings, tmp_path, capsys):
    from core.cli import main
    from core.ingest import ImportOptions, import_dataset

    originals = {f"apple/a{k}.png": png(scene(k)) for k in range(3)}
    originals |= {f"lime/l{k}.png": png(scene(50 + k)) for k in range(3)}
    first = import_dataset(_folder(tmp_path / "one", originals), settings,
                           ImportOptions(dataset="one"))
    assert first.added == 6 and first.near_duplicate_pairs == 0 and first.near_duplicates == []

    second = _folder(tmp_path / "two", {
        "apple/a0_small.png": copies(scene(0))["half"],  # of an indexed image
        "apple/a1_recoded.jpg": copies(scene(1))["jpeg60"],  # of an indexed image
        "lime/new.png": png(scene(90)),  # new, with its own copy in this import
        "lime/new_cropped.png": copies(scene(90))["crop5"],
        "lime/other.png": png(scene(91)),  # no copy anywhere
    })
    report = import_dataset(second, settings, ImportOptions(dataset="two"))
    assert report.added == 5 and report.near_duplicate_pairs == 3
    found = {(item["path"], item["similar_to"], item["within_import"])
             for item in report.near_duplicates}
    assert found == {("apple/a0_small.png", "a0.png", False),
                     ("apple/a1_recoded.jpg", "a1.png", False),
                     ("lime/new.png", "lime/new_cropped.png", True)}
    item = next(i for i in report.near_duplicates if i["path"] == "apple/a0_small.png")
    assert item["similar_dataset"] == "one" and item["class"] == item["similar_class"] == "apple"
    assert 0 <= item["distance"] <= settings.near_duplicate_distance
    assert json.loads(json.dumps(report.to_dict()))["near_duplicate_pairs"] == 3

    # The CLI says how many; a re-import adds nothing and finds no new pair.
    assert main(["ingest", str(second), "--dataset", "two"]) == 0
    assert "near-duplicate" not in capsys.readouterr().out
    third = _folder(tmp_path / "three", {"lime/l0_big.png": copies(scene(50))["double"]})
    assert main(["ingest", str(third), "--dataset", "three"]) == 0
    out = capsys.readouterr().out
    assert "1 near-duplicate pair (" in out and "lime/l0_big.png ~ l0.png" in out


def test_import_page_shows_the_near_duplicates(settings, tmp_path):
    from streamlit.testing.v1 import AppTest

    from core.ingest.jobs import submit_import
    from core.worker import run_worker

    root = _folder(tmp_path / "pair", {"apple/a.png": png(scene(3)),
                                       "apple/a_small.jpg": copies(scene(3))["jpeg60"],
                                       "apple/b.png": png(scene(4))})
    submit_import(str(root), dataset="pair", settings=settings)
    assert run_worker(settings, once=True) == 0
    at = AppTest.from_file(str(ROOT / "pages" / "import_data.py"), default_timeout=60).run()
    assert not at.exception
    assert [(m.label, m.value) for m in at.metric][-1] == ("Near-duplicates", "1")
    assert any(e.label.startswith("Near-duplicates (1 pair)") for e in at.expander)
    table = next(df.value for df in at.dataframe if "similar_to" in df.value.columns)
    assert list(table["path"]) == ["apple/a.png"] and list(table["similar_to"]) == ["apple/a_small.jpg"]


def test_rehash_fills_signatures_of_old_rows_and_the_migration_applies(settings, tmp_path, capsys):
    from alembic import command
    from sqlalchemy import inspect, select, text, update

    from core.cli import main
    from core.db.engine import alembic_config, dispose_engines, get_engine, run_write, session_scope
    from core.db.models import Image
    from core.ingest import import_dataset

    import_dataset(_folder(tmp_path / "src", {f"apple/a{k}.png": png(scene(k)) for k in range(4)}),
                   settings)
    with session_scope(settings) as session:
        stored = dict(list(session.execute(select(Image.id, Image.phash))))
    assert all(isinstance(v, int) for v in stored.values())
    assert any(v < 0 for v in stored.values()) or any(v > 0 for v in stored.values())

    # Rows from before the migration: no signatures until `rehash` (or check --repair).
    run_write(lambda s: s.execute(update(Image).values(phash=None, colour_sig=None)), settings)
    assert main(["check", "--min-age", "0"]) == 0
    assert "4 images have no near-duplicate signatures" in capsys.readouterr().out
    assert main(["rehash"]) == 0
    assert "signatures of 4 images" in capsys.readouterr().out
    with session_scope(settings) as session:
        assert dict(list(session.execute(select(Image.id, Image.phash)))) == stored
    run_write(lambda s: s.execute(update(Image).values(phash=None, colour_sig=None)), settings)
    assert main(["check", "--repair", "--min-age", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images_without_signatures"] == 0

    # Down to 0009 and up again, with rows in the table.
    config = alembic_config(settings)
    command.downgrade(config, "0009")
    dispose_engines()
    assert "phash" not in {c["name"] for c in inspect(get_engine(settings)).get_columns("images")}
    command.upgrade(config, "head")
    dispose_engines()
    engine = get_engine(settings)
    columns = {c["name"] for c in inspect(engine).get_columns("images")}
    assert {"phash", "colour_sig"} <= columns
    assert "ix_images_phash" in {i["name"] for i in inspect(engine).get_indexes("images")}
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM images WHERE phash IS NULL")).scalar() == 4


# --- the Gallery --------------------------------------------------------------------------

@pytest.fixture()
def with_copies(settings, tmp_path):
    from core.ingest import ImportOptions, import_dataset

    import_dataset(_folder(tmp_path / "orig", {
        "apple/a0.png": png(scene(0)), "apple/a1.png": png(scene(1)),
        "lime/l0.png": png(scene(2))}), settings, ImportOptions(dataset="orig"))
    import_dataset(_folder(tmp_path / "copies", {
        "apple/a0_small.png": copies(scene(0))["half"],
        "apple/a0_crop.png": copies(scene(0))["crop3"]}), settings,
        ImportOptions(dataset="copies", source="synthetic"))
    return settings


def test_gallery_lists_an_images_near_duplicates(with_copies):
    from sqlalchemy import select, update
    from streamlit.testing.v1 import AppTest

    from core import gallery
    from core.db.engine import run_write, session_scope
    from core.db.models import Image

    with session_scope(with_copies) as session:
        by_name = dict(list(session.execute(select(Image.original_name, Image.id))))
    near = gallery.near_duplicates(by_name["a0.png"], with_copies)
    assert sorted(image.original_name for image, _ in near) == ["a0_crop.png", "a0_small.png"]
    assert all(0 <= d <= with_copies.near_duplicate_distance for _, d in near)
    assert [d for _, d in near] == sorted(d for _, d in near)
    assert {image.dataset.name for image, _ in near} == {"copies"}
    assert gallery.near_duplicates(by_name["a1.png"], with_copies) == []
    assert gallery.near_duplicates(by_name["a0.png"], with_copies, max_distance=-1) == []
    # An image without signatures gets them when first shown.
    run_write(lambda s: s.execute(update(Image).where(Image.id == by_name["a0.png"])
                                  .values(phash=None, colour_sig=None)), with_copies)
    assert len(gallery.near_duplicates(by_name["a0.png"], with_copies)) == 2
    assert len(gallery.image_detail(by_name["a0.png"], with_copies)["phash"]) == 16

    at = AppTest.from_file(str(ROOT / "pages" / "gallery.py"), default_timeout=60).run()
    assert not at.exception
    at.button(key=f"g_open_{by_name['a0.png']}").click().run()
    assert not at.exception
    assert any("**Near-duplicates** (2)" in m.value for m in at.markdown)
    captions = [c.value for c in at.caption if c.value.startswith("distance ")]
    assert len(captions) == 2 and all("Apple · synthetic · copies" in c for c in captions)
    at.button(key=f"g_near_{by_name['a0_small.png']}").click().run()  # opens the copy
    assert not at.exception
    assert any(f"Image #{by_name['a0_small.png']}" in h.value for h in at.subheader)
    assert at.button(key=f"g_near_{by_name['a0.png']}")  # back to the original
    at.button(key=f"g_open_{by_name['a1.png']}").click().run()
    assert any("No near-duplicates" in c.value for c in at.caption)


# --- splits -------------------------------------------------------------------------------

def _add(settings, dataset: str, label: str, data: bytes, *, source: str = "real",  # noqa: ANN001
         split: str | None = None, generation: dict | None = None) -> int:
    from core.catalog import add_image, get_or_create_class, get_or_create_dataset
    from core.db.engine import session_scope
    from core.imageio import decode_image
    from core.store import ImageStore

    with session_scope(settings, write=True) as session:
        result = add_image(session, ImageStore(settings), decode_image(data),
                           image_class=get_or_create_class(session, label),
                           dataset=get_or_create_dataset(session, dataset, source=source),
                           raw=data, split=split, generation=generation)
        session.flush()
        return result.image.id


def _copy_groups(settings, *, per_class: int = 8) -> list[set[int]]:  # noqa: ANN001
    """Per class ``per_class`` originals, each with 1-3 copies (some in another dataset),
    and a synthetic image that is a copy of one real original. Returns the id groups."""
    groups = []
    for c_index, label in enumerate(("apple", "lime", "plum")):
        for k in range(per_class):
            image = scene(1000 * c_index + k)
            kinds = list(copies(image).items())[k % 5: k % 5 + 1 + k % 3]
            group = {_add(settings, "photos", label, png(image))}
            group |= {_add(settings, "photos" if n % 2 else "mirror", label, data)
                      for n, (_kind, data) in enumerate(kinds)}
            if k == 0:  # a generated image that reproduces a real photo
                group.add(_add(settings, "generated", label, copies(image)["jpeg60"],
                               source="synthetic",
                               generation={"prompt": f"a photo of {label}", "seed": 1}))
            groups.append(group)
        for k in range(6):  # more synthetic images, no copies of anything
            _add(settings, "generated", label, png(scene(5000 + 100 * c_index + k)),
                 source="synthetic", generation={"prompt": f"a photo of {label}", "seed": 10 + k})
    return groups


def _sides(data) -> dict[int, str]:  # noqa: ANN001
    side = {}
    for role, records in data.roles.items():
        for record in records:
            side[record.id] = "fit" if role.startswith(("train_", "val_")) else role
    return side


def test_copies_never_straddle_train_and_test_over_20_split_seeds(settings):
    from core.training.data import DataSpec, plan_experiment

    groups = _copy_groups(settings)
    for seed in range(20):
        for mode in ("real", "mixed"):
            data = plan_experiment(DataSpec(mode=mode, real_datasets=["photos", "mirror"],
                                            split_seed=seed, test_fraction=0.3), settings)
            side = _sides(data)
            for group in groups:
                placed = {side[i] for i in group if i in side}
                held = placed - {"fit"}
                assert not (held and "fit" in placed), (seed, mode, group, placed)
            assert any(n.startswith("near-duplicates:") for n in data.notes)
    # Without the grouping (the setting at -1), the same data does leak for some seed.
    import dataclasses

    from core.training.data import check_no_leakage

    off = dataclasses.replace(settings, near_duplicate_distance=-1)
    leaked = 0
    for seed in range(20):
        data = plan_experiment(DataSpec(real_datasets=["photos", "mirror"], split_seed=seed,
                                        test_fraction=0.3), off)
        side = _sides(data)
        placed = [{side[i] for i in group if i in side} for group in groups]
        if any("fit" in sides and len(sides) > 1 for sides in placed):
            leaked += 1
            with pytest.raises(AssertionError, match="near-duplicate pairs straddle"):
                check_no_leakage(data, settings)  # the check itself catches it
    assert leaked


def test_tagged_test_images_take_their_untagged_copies_out_of_training(settings):
    from core.training.data import DataSpec, plan_experiment

    for c_index, label in enumerate(("apple", "lime")):
        for k in range(6):
            image = scene(300 * c_index + k)
            tagged = k < 2
            _add(settings, "bench", label, png(image), split="test" if tagged else None)
            if tagged:  # an untagged copy, in another dataset, of each tagged test image
                _add(settings, "bench-copies", label, copies(image)["half"])
        _add(settings, "market", label, copies(scene(300 * c_index + 4))["crop3"])  # of training
        _add(settings, "market", label, png(scene(900 + c_index)))
    data = plan_experiment(DataSpec(real_datasets=["bench", "bench-copies"],
                                    cross_datasets=["market"], val_fraction=0.25), settings)
    assert data.counts()["test_real"] == 4
    fitting = {r.dataset for role in ("train_real", "val_real") for r in data.records(role)}
    assert fitting == {"bench"}  # the copies of test images are nowhere in training
    assert any(n.startswith("4 untagged images left out of training") for n in data.notes)
    # Cross-dataset evaluation leaves out market's copies of training images.
    assert data.counts()["cross:market"] == 2
    assert any(n == "cross:market: 2 near-duplicates of training images left out"
               for n in data.notes)


def test_a_class_that_is_mostly_copies_of_one_picture_is_refused(settings):
    from core.training.data import DataError, DataSpec, plan_experiment

    for c_index, label in enumerate(("apple", "lime")):
        for k in range(5):
            _add(settings, "shop", label, png(scene(700 + 10 * c_index + k)))
    original = scene(800)
    for data in copies(original).values():  # apple: 6 of 11 images are one picture
        _add(settings, "shop", "apple", data)
    _add(settings, "shop", "apple", png(original))
    with pytest.raises(DataError, match="6 of the 11 real images of class apple are one group"):
        plan_experiment(DataSpec(real_datasets=["shop"]), settings)


# --- PostgreSQL ---------------------------------------------------------------------------

from tests.test_postgres import pg_settings, postgres_server  # noqa: E402,F401 - fixtures


def test_signatures_and_near_duplicates_on_postgres(pg_settings, tmp_path):  # noqa: F811
    from sqlalchemy import select

    from core import gallery
    from core.db.engine import init_db, session_scope
    from core.db.models import Image
    from core.ingest import import_dataset

    init_db(pg_settings)
    files = {f"apple/a{k}.png": png(scene(k)) for k in range(6)}
    files["apple/a0_small.jpg"] = copies(scene(0))["jpeg60"]
    report = import_dataset(_folder(tmp_path / "src", files), pg_settings)
    assert report.added == 7 and report.near_duplicate_pairs == 1
    with session_scope(pg_settings) as session:
        rows = dict(list(session.execute(select(Image.original_name, Image.phash))))
    # Signed 64-bit values round-trip through BIGINT, negative ones included.
    assert rows["a0.png"] == signature(files["apple/a0.png"])[0]
    assert all(-(2**63) <= v < 2**63 for v in rows.values())
    with session_scope(pg_settings) as session:
        a0 = session.scalar(select(Image.id).where(Image.original_name == "a0.png"))
    assert [i.original_name for i, _ in gallery.near_duplicates(a0, pg_settings)] == ["a0_small.jpg"]
