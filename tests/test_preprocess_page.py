"""The Preprocess (Compare) page in Streamlit's AppTest, with real and synthetic images."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.imagemaker import fruit_image
from tests.test_preprocess_core import add_images

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "preprocess.py")


def _page() -> AppTest:
    return AppTest.from_file(PAGE, default_timeout=60)


def _texts(elements) -> str:  # noqa: ANN001
    return " | ".join(str(e.value) for e in elements)


def _image_urls(at: AppTest) -> list[str]:
    return [img.url for image in at.get("image") for img in image.proto.imgs]


def _image_captions(at: AppTest) -> list[str]:
    return [caption for image in at.get("image") for caption in image.captions]


def test_page_with_no_images_explains_what_to_do(settings):
    at = _page().run()
    assert not at.exception
    assert [t.value for t in at.title] == ["Preprocess"]
    assert "No images yet" in _texts(at.info)
    assert not at.get("plotly_chart") and not at.get("image")


def test_page_with_real_images_only_says_synthetic_are_missing(settings):
    add_images(settings, [(fruit_image("apple", i, (120, 80)), "apple", "real") for i in range(3)])
    at = _page().run()
    assert not at.exception
    assert "No synthetic images in this class yet" in _texts(at.info)
    # The real side only: original, letterbox, resize, and the stretched plain resize.
    assert _image_captions(at) == ["Original · 120x80", "Letterbox · 120x120", "Resize · 64x64",
                                   "Plain resize (stretched) · 64x64"]
    assert at.get("plotly_chart")
    assert "no synthetic images here" in _texts(at.caption)


def test_page_compares_real_and_synthetic_and_saves_a_preset(settings):
    from core.preprocess import get_preset, load_pipeline

    add_images(settings, [(fruit_image("apple", i, (150, 100)), "apple", "real") for i in range(4)])
    add_images(settings, [(fruit_image("apple", 20 + i, (256, 256)), "apple", "synthetic") for i in range(3)]
               + [(fruit_image("lime", 40, (256, 256)), "lime", "synthetic")])
    at = _page().run()
    assert not at.exception
    assert not at.info
    captions = _image_captions(at)
    # Every stage, for both sides, beside the stretched plain resize; big images are first
    # shrunk to the working size (twice the output).
    assert captions[:5] == ["Original · 150x100", "Downscale to 128px · 128x85", "Letterbox · 128x128",
                            "Resize · 64x64", "Plain resize (stretched) · 64x64"]
    assert captions[5:7] == ["Original · 256x256", "Downscale to 128px · 128x128"]
    assert captions[7].startswith("Random margin")
    assert captions[8:] == ["Letterbox · 128x128", "Resize · 64x64", "Plain resize (stretched) · 64x64"]
    assert at.get("plotly_chart")
    captions = _texts(at.caption)
    assert "before" in captions and "after" in captions

    # Sliders and selects drive the preview: switch the real letterbox fill to white.
    before = _image_urls(at)
    assert "pp_real_1_0_colour" not in [c.key for c in at.color_picker]  # only for fill "colour"
    at.selectbox(key="pp_real_1_0_fill").set_value("colour").run()
    at.color_picker(key="pp_real_1_0_colour").pick("#00ff00").run()
    assert not at.exception
    at.selectbox(key="pp_real_1_0_fill").set_value("white").run()
    assert not at.exception
    after = _image_urls(at)
    assert after[:2] == before[:2] and after[2] != before[2]  # same original, new letterbox
    # An invalid range is a clear error, not a crash.
    at.slider(key="pp_synthetic_1_0_min_aspect").set_value(2.0).run()
    at.slider(key="pp_synthetic_1_0_max_aspect").set_value(1.2).run()
    # Errors are escaped markdown (issue 13, point 8): compare the text a viewer reads.
    assert "min_aspect <= max_aspect" in _texts(at.error).replace("\\", "")
    at.slider(key="pp_synthetic_1_0_max_aspect").set_value(3.0).run()
    assert not at.error

    # Add a step, then save the edited synthetic pipeline as a preset.
    at.selectbox(key="pp_synthetic_1_add").set_value("Horizontal flip").run()
    assert not at.exception
    at.radio[0].set_value("synthetic")
    at.text_input[0].input("wide synthetic")
    next(b for b in at.button if b.label == "Save preset").click().run()
    assert not at.exception and "Saved preset" in _texts(at.success)
    saved = load_pipeline(get_preset("wide synthetic", settings), settings)
    assert [s.type_name for s in saved.steps] == ["random_margin", "letterbox", "resize", "hflip"]
    assert saved.steps[0].min_aspect == 2.0 and saved.steps[0].max_aspect == 3.0

    # A saved preset is a starting point for either side; steps can be removed.
    at.selectbox(key="pp_real_base").set_value("wide synthetic").run()
    real_steps = [e.label for e in at.expander if e.label[0].isdigit()][:4]
    assert real_steps == ["1. Random margin", "2. Letterbox", "3. Resize", "4. Horizontal flip"]
    remove = next(b for b in at.button if b.label == "Remove this step" and b.key.startswith("pp_real_")
                  and b.key.endswith("_3_remove"))
    remove.click().run()
    assert not at.exception
    assert [e.label for e in at.expander if e.label[0].isdigit()][:4] == [
        "1. Random margin", "2. Letterbox", "3. Resize", "1. Random margin"]

    # The random margin can follow the aspect ratios measured from a real dataset.
    measure = next(b for b in at.button if b.label == "Use this dataset's aspect ratios"
                   and b.key.startswith("pp_synthetic_"))
    measure.click().run()
    assert not at.exception
    assert "Aspect ratios measured from a real dataset: 4 values, median 1.50" in _texts(at.caption)

    # Another class narrows the choices; a random pick works.
    at.selectbox(key="pp_class").set_value("lime").run()
    assert "No real images in this class." in _texts(at.info)
    next(b for b in at.button if b.label == "Random").click().run()
    assert not at.exception

    # Deleting the preset the real side started from falls back cleanly.
    at.selectbox(key="pp_class").set_value(None).run()
    delete_form_select = next(s for s in at.selectbox if s.label == "Preset")
    delete_form_select.set_value("wide synthetic")
    next(b for b in at.button if b.label == "Delete preset").click().run()
    assert not at.exception
    assert "Deleted preset “wide synthetic”." in _texts(at.success)
    assert get_preset("wide synthetic", settings) is None
    at.run()
    assert not at.exception
