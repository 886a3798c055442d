"""Users of a shared SynthLab server: accounts, sign-in, roles and the audit log.

``accounts`` (local password accounts), ``identity`` (who is acting), ``permissions``
(who may change what), ``audit`` (who did what, when), ``auth_mode`` (which sign-in a
server uses). Nothing here imports Streamlit: ``webui`` puts a face on it.
"""
