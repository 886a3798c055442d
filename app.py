"""SynthLab dashboard entry point: ``streamlit run app.py``."""

from pathlib import Path

import streamlit as st

from webui import boot, sidebar

HERE = Path(__file__).resolve().parent

# A file, not ":material/science:": Streamlit draws a Material page icon by loading it from
# fonts.gstatic.com, which fails offline. (The menu's Material icons below come with
# Streamlit's own font and load from this server.)
st.set_page_config(page_title="SynthLab", page_icon=str(HERE / "webui" / "static" / "icon.svg"),
                   layout="wide")

# (file, title, icon) in menu order; a capability appears once its page file exists.
PAGES = [
    ("pages/home.py", "Home", ":material/home:"),
    ("pages/import_data.py", "Import", ":material/upload:"),
    ("pages/gallery.py", "Gallery", ":material/photo_library:"),
    ("pages/generate.py", "Generate", ":material/auto_awesome:"),
    ("pages/preprocess.py", "Preprocess", ":material/crop:"),
    ("pages/train.py", "Train", ":material/model_training:"),
    ("pages/results.py", "Results", ":material/monitoring:"),
    ("pages/explain.py", "Explain", ":material/visibility:"),
    ("pages/quiz.py", "Quiz", ":material/quiz:"),
    ("pages/admin.py", "Admin", ":material/admin_panel_settings:"),
]



def _pages() -> list[st.Page]:
    return [st.Page(path, title=title, icon=icon, default=index == 0)
            for index, (path, title, icon) in enumerate(PAGES) if (HERE / path).is_file()]


# A hidden menu first, before the sign-in gate in boot() (which stops the run before the
# real menu below): otherwise the first visitor after a server start sees every page name
# that Streamlit found in pages/ (its old multipage layout) next to the sign-in form. The
# same pages keep a bookmarked URL (/gallery) resolving to its page through the sign-in.
st.navigation(_pages(), position="hidden")
settings = boot()
navigation = st.navigation(_pages())
sidebar(settings)
navigation.run()
