"""The dashboard's Streamlit helpers, shared by ``app.py`` and every page in ``pages/``.

* ``webui.page``: start-up (migrate, sign-in gate, autostart the worker), who is using
  this tab, the sidebar, ``escape_markdown`` for user text;
* ``webui.jobs``: the live job panel (progress, rate, cancel) and ``live_fragment``;
* ``webui.uploads``: the guard on Streamlit's upload store (nothing before sign-in, caps).

Pages stay thin: widgets here and in ``pages/``, logic in ``core/`` (no Streamlit there).
The names pages use most are importable from ``webui`` itself.
"""

from webui.page import (auth_mode, boot, current_identity, current_user, device_info,
                        error_text, escape_markdown, sidebar)

__all__ = ["auth_mode", "boot", "current_identity", "current_user", "device_info",
           "error_text", "escape_markdown", "sidebar"]
