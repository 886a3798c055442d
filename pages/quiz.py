"""Quiz: "Which image is real?" - play, see the reveal, the leaderboard, and the analysis of
how often synthetic images pass for real, with the machine judge beside the humans."""

from __future__ import annotations

from functools import partial

import pandas as pd
import streamlit as st

from core.quiz import rounds, stats
from core.quiz.jobs import JOB_KIND, submit_judge
from core.quiz.judge import JudgeConfig
from core.quiz.models import MODE_PAIR, MODE_QUAD, MODE_SINGLE, VIEW_MODEL, VIEW_ORIGINAL
from core.users.permissions import can_modify
from webui import boot, current_identity, current_user, escape_markdown
from webui.jobs import render_job_list

settings = boot()
player = current_user()
identity = current_identity()

MODE_LABELS = {MODE_PAIR: "Which is real? (2 images)", MODE_QUAD: "Which is real? (4 images)",
               MODE_SINGLE: "Real or generated? (1 image)"}
VIEW_LABELS = {VIEW_ORIGINAL: "Originals", VIEW_MODEL: "As the model sees them (preprocessed)"}
ANY = "(any)"
ROUND_KEY, REVEAL_KEY, MESSAGE_KEY = "quiz_round", "quiz_revealed", "quiz_message"
# The current round as served to this browser session: reruns show the same bytes (same
# URLs, nothing reloads); a new round, another session or another player gets new ones.
SERVED_KEY = "quiz_served"
KEYS_KEY = "quiz_keys"
KEYS_HELP = ("Keys: **1**-**4** pick the real image, **R** / **G** real or generated "
             "(1-image game), **Enter** or **N** next round, **S** skip.")

# Keys: st.button's ``shortcut`` where it can be used - G, S and Enter on "Next round".
# It cannot do the rest: R is refused (Streamlit keeps R for "rerun"), a button takes one
# key (N is a second key for "next"), and a shortcut becomes part of the button's name
# ("This one is real 1"), which would rename the pick and deal buttons that people and
# the end-to-end test find by name. So this listener adds 1-4, R, N and Enter-to-deal:
# only the keys the page offers at that moment, never while typing in a field or while
# the Play tab is hidden, and Enter is left to a focused button or link. Streamlit calls
# the function again on every data change without a cleanup, so one listener per page
# reads the newest keys, and it goes quiet once the quiz is no longer on the page.
_KEYS_JS = """
export default function (component) {
  const { data, setTriggerValue, parentElement } = component;
  const state = (window.__synthlabQuizKeys = window.__synthlabQuizKeys || {});
  state.keys = (data && data.keys) || [];
  state.send = setTriggerValue;
  state.anchor = parentElement;
  if (!state.listening) {
    state.listening = true;
    window.addEventListener("keydown", (event) => {
      const s = window.__synthlabQuizKeys;
      if (!s.anchor || !s.anchor.isConnected) return;
      // Not while another tab (Leaderboard, Analysis) hides the round.
      const host = s.anchor.host || s.anchor;  // the anchor may be the shadow root
      if (host.checkVisibility && !host.checkVisibility()) return;
      if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
      const target = event.composedPath ? event.composedPath()[0] : event.target;
      const tag = (target && target.tagName) || "";
      if (target && (target.isContentEditable
                     || ["INPUT", "TEXTAREA", "SELECT"].includes(tag))) return;
      const key = (event.key || "").toLowerCase();
      if (key === "enter" && (["BUTTON", "A", "SUMMARY"].includes(tag)
                              || (target.getAttribute && target.getAttribute("role") === "button"))) return;
      if (!s.keys.includes(key)) return;
      event.preventDefault();
      event.stopImmediatePropagation();  // R must not also rerun the page
      s.send("key", key);
    }, true);
  }
  return () => { if (state.anchor === parentElement) state.keys = []; };
}
"""
_quiz_keys = st.components.v2.component("synthlab_quiz_keys", js=_KEYS_JS)


def _request() -> rounds.RoundRequest:
    def pick(key: str) -> str | None:
        value = st.session_state.get(key)
        return None if value in (None, ANY) else value

    return rounds.RoundRequest(
        mode=st.session_state.get("quiz_mode", MODE_PAIR), class_name=pick("quiz_class"),
        real_dataset=pick("quiz_real_dataset"), synthetic_dataset=pick("quiz_synthetic_dataset"),
        model=pick("quiz_model"), view=st.session_state.get("quiz_view", VIEW_ORIGINAL),
        real_pipeline=st.session_state.get("quiz_real_pipeline") or "real",
        synthetic_pipeline=st.session_state.get("quiz_synthetic_pipeline") or "synthetic")


def _deal() -> None:
    try:
        view = rounds.new_round(player, _request(), settings)
    except rounds.QuizError as exc:
        st.session_state[MESSAGE_KEY] = str(exc)
        return
    st.session_state[ROUND_KEY] = view.token
    st.session_state.pop(REVEAL_KEY, None)
    st.session_state.pop(MESSAGE_KEY, None)


def _answer(round_token: str, position: int | None = None, guess: str | None = None) -> None:
    try:
        rounds.answer_round(player, round_token, position=position, guess=guess, settings=settings)
    except rounds.AlreadyAnswered:
        st.session_state[MESSAGE_KEY] = "This round was already answered (another tab?)."
    except rounds.QuizError as exc:
        st.session_state[MESSAGE_KEY] = str(exc)
        return
    st.session_state[REVEAL_KEY] = round_token


def _skip(round_token: str) -> None:
    try:
        rounds.skip_round(player, round_token, settings)
    except rounds.QuizError as exc:  # answered meanwhile (another tab): just move on
        st.session_state[MESSAGE_KEY] = str(exc)
    _deal()


def _on_key(round_token: str | None) -> None:
    key = (st.session_state.get(KEYS_KEY) or {}).get("key")
    if key == "r" and round_token:
        _answer(round_token, guess="real")
    elif key in ("1", "2", "3", "4") and round_token:
        _answer(round_token, position=int(key) - 1)
    elif key in ("n", "enter"):
        _deal()


def _keys(live: list[str], round_token: str | None = None) -> None:
    """Listen for ``live`` keys (see _KEYS_JS); ``round_token`` is the round they answer."""
    _quiz_keys(key=KEYS_KEY, data={"keys": live}, on_key_change=partial(_on_key, round_token))


def _served(round_token: str) -> rounds.ServedRound:
    cached = st.session_state.get(SERVED_KEY)
    if cached is not None and cached.round_token == round_token:
        return cached
    served = rounds.serve_round(round_token, settings)
    st.session_state[SERVED_KEY] = served
    return served


def _settings_panel(options: rounds.QuizOptions) -> None:
    with st.expander("Round settings: game, class, model, preprocessing", expanded=False):
        st.radio("Game", list(MODE_LABELS), format_func=MODE_LABELS.get, key="quiz_mode",
                 horizontal=True)
        left, right = st.columns(2)
        class_labels = dict(options.classes)
        left.selectbox("Class", [ANY] + list(class_labels), key="quiz_class",
                       format_func=lambda key: class_labels.get(key, key))
        right.selectbox("Model of the synthetic images", [ANY] + options.models, key="quiz_model")
        left.selectbox("Real dataset", [ANY] + options.real_datasets, key="quiz_real_dataset")
        right.selectbox("Synthetic dataset", [ANY] + options.synthetic_datasets,
                        key="quiz_synthetic_dataset")
        views = [VIEW_ORIGINAL] if options.model_view_unavailable else list(VIEW_LABELS)
        st.radio("Show", views, format_func=VIEW_LABELS.get, key="quiz_view", horizontal=True)
        if options.model_view_unavailable:
            st.caption(f"The preprocessed view is not available: {options.model_view_unavailable}")
        elif st.session_state.get("quiz_view") == VIEW_MODEL:
            left.selectbox("Pipeline for real images", options.pipelines, key="quiz_real_pipeline",
                           index=options.pipelines.index("real"))
            right.selectbox("Pipeline for synthetic images", options.pipelines,
                            key="quiz_synthetic_pipeline", index=options.pipelines.index("synthetic"))
        st.caption("Settings apply from the next round. Choosing one class, one model or one "
                   "preprocessing setting makes its fool rate (Analysis tab) comparable.")


def _score_line() -> None:
    score = stats.player_score(player, settings)
    cols = st.columns(5)
    cols[0].metric("Score", score.score)
    cols[1].metric("Accuracy", "-" if score.accuracy is None else f"{score.accuracy:.0%}",
                   help=f"{score.correct} right of {score.answered}")
    cols[2].metric("Streak", score.streak)
    cols[3].metric("Best streak", score.best_streak)
    cols[4].metric("Skipped", score.skipped, help="Skipped rounds are recorded, never scored.")


def _quizzed_on(view: rounds.RoundView) -> str:
    """What the player asked for (the round's filters), never what the round holds."""
    filters = view.filters
    parts = [MODE_LABELS.get(view.mode, view.mode)]
    if filters.get("class_name"):
        parts.append(f"class {escape_markdown(view.class_display)}")
    for key, label in (("model", "model"), ("real_dataset", "real dataset"),
                       ("synthetic_dataset", "synthetic dataset")):
        if filters.get(key):
            parts.append(f"{label} {escape_markdown(filters[key])}")
    parts.append(view.view_label if view.view == VIEW_MODEL else "originals")
    return "Quizzed on: " + " · ".join(parts)


def _image_grid(view: rounds.RoundView) -> list:
    """One cell per image, in position order: a row for 2, two rows of 2 for 4 (so each
    stays at its full, sharp size), and image | buttons for 1."""
    if view.mode == MODE_SINGLE:
        return list(st.columns([1, 1]))
    if view.mode == MODE_QUAD:
        return [cell for _row in range(2) for cell in st.columns(2)]
    return list(st.columns(len(view.image_tokens)))


def _show_images(cells: list, served: rounds.ServedRound) -> None:
    # Every image was rendered and encoded before this first call: they arrive together.
    for image in served.images:
        with cells[image.position]:
            # Exactly its own width: the browser never rescales it (and the style above keeps
            # even a high-density screen from smoothing it).
            st.image(image.data, width=image.px, output_format="PNG")


def _show_round(view: rounds.RoundView) -> None:
    served = _served(view.token)
    st.subheader(f"{escape_markdown(view.class_display)}: " + ("which one is real?" if view.mode != MODE_SINGLE
                                              else "real or generated?"))
    st.caption(_quizzed_on(view))
    cells = _image_grid(view)
    _show_images(cells, served)
    if view.mode == MODE_SINGLE:
        with cells[1]:
            st.button("Real `R`", key="quiz_guess_real", on_click=_answer, args=(view.token,),
                      kwargs={"guess": "real"}, width="stretch")
            st.button("Generated", key="quiz_guess_synthetic", on_click=_answer, shortcut="G",
                      args=(view.token,), kwargs={"guess": "synthetic"}, width="stretch")
    else:
        for position in range(len(view.image_tokens)):
            with cells[position]:
                st.button("This one is real", key=f"quiz_pick_{position}", on_click=_answer,
                          args=(view.token,), kwargs={"position": position},
                          help=f"Key {position + 1}", width=served.px)
    st.button("Skip this round", key="quiz_skip", on_click=_skip, args=(view.token,),
              shortcut="S", help="Recorded as skipped, not scored; the answer is not shown.")
    st.caption(served.note() + " " + KEYS_HELP)
    _keys(["r"] if view.mode == MODE_SINGLE
          else [str(p + 1) for p in range(len(view.image_tokens))], view.token)


def _show_reveal(view: rounds.RoundView, reveal: rounds.Reveal) -> None:
    if reveal.correct:
        st.success(f"Right! ({reveal.seconds_to_answer:.1f} s)")
    elif reveal.fooled:
        st.error(f"Fooled: that one was generated. ({reveal.seconds_to_answer:.1f} s)")
    else:
        st.error(f"Wrong: that one was real. ({reveal.seconds_to_answer:.1f} s)")
    st.button("Next round", key="quiz_next", on_click=_deal, type="primary", shortcut="Enter",
              help="Enter or N")
    cells = _image_grid(view)
    try:
        _show_images(cells, _served(view.token))
    except rounds.QuizError:
        st.caption("(an image of this round was deleted since)")
    for image in reveal.images:
        with cells[image.position]:
            chosen = " - your pick" if reveal.chosen_position == image.position else ""
            if image.is_real:
                st.markdown(f"**Real** (dataset: {escape_markdown(image.dataset)}){chosen}")
            else:
                st.markdown(f"**Generated** by {escape_markdown(image.model)}{chosen}")
                # Prompts are user text: shown as plain text, never as markdown or HTML.
                st.text(f"prompt: {image.prompt or '(not recorded)'}")
    st.caption(KEYS_HELP)
    _keys(["n"])


@st.fragment
def _play_area() -> None:
    # A fragment: answering, skipping and the next round rerun only this part of the page
    # (not the leaderboard and the analysis charts), which keeps each step well under 1 s.
    _score_line()
    message = st.session_state.pop(MESSAGE_KEY, None)
    if message:
        st.warning(escape_markdown(message))
    token = st.session_state.get(ROUND_KEY)
    if token is None:
        resumed = rounds.open_round(player, settings)  # a reload keeps the dealt round
        token = resumed.token if resumed else None
        if token:
            st.session_state[ROUND_KEY] = token
    view = None
    if token is not None:
        try:
            view = rounds.get_round(token, settings)
            if view.player != player:  # the name in the sidebar changed
                raise rounds.QuizError("another player's round")
        except rounds.QuizError:
            st.session_state.pop(ROUND_KEY, None)
            view = None
    if view is not None and view.missing_images and not view.answered:
        st.warning("An image of this round was deleted meanwhile.")
        view = None
    if view is None or view.skipped:
        st.button("Deal a round", key="quiz_deal", on_click=_deal, type="primary",
                  help="Enter or N")
        st.caption(KEYS_HELP)
        _keys(["enter", "n"])
        return
    reveal = rounds.reveal_round(token, settings) if view.answered else None
    with st.container(key="quiz_images"):
        if reveal is None:
            _show_round(view)
        else:
            _show_reveal(view, reveal)


def _play_tab() -> None:
    if player == "anonymous":
        st.info("Enter your name in the sidebar to play: answers and scores are kept per player.")
        return
    try:
        rounds.check_player_name(player)
    except rounds.QuizError as exc:
        st.warning(f"Cannot play under this name: {escape_markdown(exc)}")
        return
    options = rounds.quiz_options(settings)
    _settings_panel(options)
    if not options.classes:
        st.warning("No class has both real and synthetic images yet. Import real images "
                   "(Import page) and generate synthetic ones (Generate page) for the same classes.")
        return
    _play_area()


def _leaderboard_tab() -> None:
    board = stats.leaderboard(settings)
    if not board:
        st.caption("No answers yet.")
        return
    st.dataframe(pd.DataFrame([{
        "rank": rank, "player": s.player, "score": s.score, "answered": s.answered,
        "accuracy": s.accuracy, "streak": s.streak, "best streak": s.best_streak,
        "skipped": s.skipped, "mean seconds": s.mean_seconds} for rank, s in enumerate(board, 1)]),
        hide_index=True, column_config={
            "accuracy": st.column_config.ProgressColumn("accuracy", min_value=0.0, max_value=1.0,
                                                        format="percent"),
            "mean seconds": st.column_config.NumberColumn(format="%.1f")})


def _analysis_tab() -> None:
    mode = st.selectbox("Rounds", ["all", *MODE_LABELS],
                        format_func=lambda m: "All games" if m == "all" else MODE_LABELS[m],
                        key="quiz_analysis_mode")
    result = stats.analysis(settings, mode=None if mode == "all" else mode)
    overall = result["overall"]
    cols = st.columns(4)
    cols[0].metric("Answered rounds", overall["rounds"])
    cols[1].metric("Humans fooled", "-" if overall["human_fool_rate"] is None
                   else f"{overall['human_fool_rate']:.0%}")
    cols[2].metric("Human accuracy", "-" if overall["human_accuracy"] is None
                   else f"{overall['human_accuracy']:.0%}")
    judge_accuracy = overall.get("judge_accuracy")
    cols[3].metric("Machine judge accuracy", "-" if judge_accuracy is None else f"{judge_accuracy:.0%}",
                   help="On the same rounds the humans answered"
                        + (f" (humans: {overall['human_accuracy_same_rounds']:.0%})"
                           if overall.get("human_accuracy_same_rounds") is not None else ""))
    st.caption("Fool rate: how often a synthetic image was taken for the real one, over rounds "
               "that showed one. Guessing blindly is fooled at the chance rate "
               "(2 images 50 %, 4 images 75 %, 1 image 50 %).")
    if overall["rounds"]:
        run = result["judge_run"]
        judge = stats.judge_frame(run["id"], settings) if run else None
        frame = stats.answers_frame(settings, mode=None if mode == "all" else mode)
        for by in stats.GROUPINGS:
            table = stats.fool_rates(frame, by, judge)
            st.plotly_chart(stats.fool_rate_figure(table, by), key=f"quiz_chart_{by}")
            st.dataframe(table, hide_index=True, column_config={
                column: st.column_config.NumberColumn(column.replace("_", " "), format="percent")
                for column in table.columns if column.endswith(("_rate", "_accuracy",
                                                                "_same_rounds"))})
    else:
        st.caption("No answers yet: play a few rounds first.")

    st.subheader("Machine judge")
    st.caption("A small CNN trained here to tell real from synthetic, from the same served "
               "pixels the players see. Each image is judged by a model trained on the other "
               "folds, so it never judges an image it learned from.")
    run = result["judge_run"]
    if run:
        st.caption(f"Latest run: job #{run['job_id']}, {run['train_images']} training images, "
                   f"{run['rounds']} rounds judged.")
    with st.form("quiz_judge_form"):
        cols = st.columns(3)
        epochs = cols[0].number_input("Epochs", 1, 200, 10)
        folds = cols[1].number_input("Folds", 2, 10, 2)
        image_px = cols[2].select_slider("Input size", [16, 24, 32, 48, 64], value=32)
        if st.form_submit_button("Train the judge"):
            job_id = submit_judge(JudgeConfig(epochs=int(epochs), folds=int(folds),
                                              image_px=int(image_px)),
                                  created_by=identity, settings=settings)
            st.success(f"Queued as job #{job_id}; it runs in the background worker.")
    render_job_list((JOB_KIND,), user=player, key="quiz_jobs", limit=3,
                    can_cancel=lambda job: can_modify(identity, job.created_by, "cancel"))


st.title("Which image is real?")
# Quiz pictures are enlarged with nearest-neighbour on the server; keep a high-density
# screen from smoothing them again.
st.html("<style>.st-key-quiz_images img { image-rendering: pixelated; }</style>")
play, board, analysis = st.tabs(["Play", "Leaderboard", "Analysis"])
with play:
    _play_tab()
with board:
    _leaderboard_tab()
with analysis:
    _analysis_tab()
