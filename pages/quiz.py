"""Quiz: "Which image is real?" - play, see the reveal, the leaderboard, and the analysis of
how often synthetic images pass for real, with the machine judge beside the humans."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.quiz import rounds, stats
from core.quiz.jobs import JOB_KIND, submit_judge
from core.quiz.judge import JudgeConfig
from core.quiz.models import MODE_PAIR, MODE_QUAD, MODE_SINGLE, VIEW_MODEL, VIEW_ORIGINAL
from core.users.permissions import can_modify
from webui import boot, current_identity, current_user
from webui_jobs import render_job_list

settings = boot()
player = current_user()
identity = current_identity()

MODE_LABELS = {MODE_PAIR: "Which is real? (2 images)", MODE_QUAD: "Which is real? (4 images)",
               MODE_SINGLE: "Real or generated? (1 image)"}
VIEW_LABELS = {VIEW_ORIGINAL: "Originals", VIEW_MODEL: "As the model sees them (preprocessed)"}
ANY = "(any)"
ROUND_KEY, REVEAL_KEY, MESSAGE_KEY = "quiz_round", "quiz_revealed", "quiz_message"


@st.cache_data(max_entries=64, show_spinner=False)
def _image_bytes(image_token: str) -> bytes:
    # Tokens are random per round and the bytes never change for a token: safe to cache.
    return rounds.served_image(image_token, settings)[0]


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


def _settings_panel(options: rounds.QuizOptions) -> None:
    with st.expander("Round settings", expanded=False):
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
        st.caption("Settings apply from the next round.")


def _score_line() -> None:
    score = stats.player_score(player, settings)
    cols = st.columns(4)
    cols[0].metric("Score", score.score)
    cols[1].metric("Accuracy", "-" if score.accuracy is None else f"{score.accuracy:.0%}",
                   help=f"{score.correct} right of {score.answered}")
    cols[2].metric("Streak", score.streak)
    cols[3].metric("Best streak", score.best_streak)


def _show_round(view: rounds.RoundView) -> None:
    st.subheader(f"{view.class_display}: " + ("which one is real?" if view.mode != MODE_SINGLE
                                              else "real or generated?"))
    columns = st.columns(len(view.image_tokens) if view.mode != MODE_SINGLE else [1, 1])
    for position, token in enumerate(view.image_tokens):
        with columns[position]:
            st.image(_image_bytes(token), width="stretch")
            if view.mode != MODE_SINGLE:
                st.button("This one is real", key=f"quiz_pick_{position}", on_click=_answer,
                          args=(view.token,), kwargs={"position": position}, width="stretch")
    if view.mode == MODE_SINGLE:
        with columns[1]:
            st.button("Real", key="quiz_guess_real", on_click=_answer, args=(view.token,),
                      kwargs={"guess": "real"}, width="stretch")
            st.button("Generated", key="quiz_guess_synthetic", on_click=_answer,
                      args=(view.token,), kwargs={"guess": "synthetic"}, width="stretch")


def _show_reveal(view: rounds.RoundView, reveal: rounds.Reveal) -> None:
    if reveal.correct:
        st.success(f"Right! ({reveal.seconds_to_answer:.1f} s)")
    elif reveal.fooled:
        st.error(f"Fooled: that one was generated. ({reveal.seconds_to_answer:.1f} s)")
    else:
        st.error(f"Wrong: that one was real. ({reveal.seconds_to_answer:.1f} s)")
    columns = st.columns(len(reveal.images) if view.mode != MODE_SINGLE else [1, 1])
    for image, token in zip(reveal.images, view.image_tokens):
        with columns[image.position]:
            try:
                st.image(_image_bytes(token), width="stretch")
            except rounds.QuizError:
                st.caption("(image deleted since)")
            chosen = " - your pick" if reveal.chosen_position == image.position else ""
            if image.is_real:
                st.markdown(f"**Real** (dataset: {image.dataset}){chosen}")
            else:
                st.markdown(f"**Generated** by `{image.model}`{chosen}")
                # Prompts are user text: shown as plain text, never as markdown or HTML.
                st.text(f"prompt: {image.prompt or '(not recorded)'}")
    st.button("Next round", key="quiz_next", on_click=_deal, type="primary")


def _play_tab() -> None:
    if player == "anonymous":
        st.info("Enter your name in the sidebar to play: answers and scores are kept per player.")
        return
    try:
        rounds.check_player_name(player)
    except rounds.QuizError as exc:
        st.warning(f"Cannot play under this name: {exc}")
        return
    _score_line()
    options = rounds.quiz_options(settings)
    _settings_panel(options)
    if not options.classes:
        st.warning("No class has both real and synthetic images yet. Import real images "
                   "(Import page) and generate synthetic ones (Generate page) for the same classes.")
        return
    message = st.session_state.pop(MESSAGE_KEY, None)
    if message:
        st.warning(message)
    token = st.session_state.get(ROUND_KEY)
    if token is None:
        resumed = rounds.open_round(player, settings)  # a reload keeps the dealt round
        token = resumed.token if resumed else None
        if token:
            st.session_state[ROUND_KEY] = token
    if token is None:
        st.button("Deal a round", key="quiz_deal", on_click=_deal, type="primary")
        return
    try:
        view = rounds.get_round(token, settings)
        if view.player != player:  # the name in the sidebar changed
            raise rounds.QuizError("another player's round")
    except rounds.QuizError:
        st.session_state.pop(ROUND_KEY, None)
        st.button("Deal a round", key="quiz_deal", on_click=_deal, type="primary")
        return
    if view.missing_images and not view.answered:
        st.warning("An image of this round was deleted meanwhile.")
        st.button("Deal a round", key="quiz_deal", on_click=_deal, type="primary")
        return
    reveal = rounds.reveal_round(token, settings) if view.answered else None
    if reveal is None:
        _show_round(view)
    else:
        _show_reveal(view, reveal)


def _leaderboard_tab() -> None:
    board = stats.leaderboard(settings)
    if not board:
        st.caption("No answers yet.")
        return
    st.dataframe(pd.DataFrame([{
        "rank": rank, "player": s.player, "score": s.score, "answered": s.answered,
        "accuracy": s.accuracy, "streak": s.streak, "best streak": s.best_streak,
        "mean seconds": s.mean_seconds} for rank, s in enumerate(board, 1)]),
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
                                  created_by=player, settings=settings)
            st.success(f"Queued as job #{job_id}; it runs in the background worker.")
    render_job_list((JOB_KIND,), user=player, key="quiz_jobs", limit=3,
                    can_cancel=lambda job: can_modify(identity, job.created_by, "cancel"))


st.title("Which image is real?")
play, board, analysis = st.tabs(["Play", "Leaderboard", "Analysis"])
with play:
    _play_tab()
with board:
    _leaderboard_tab()
with analysis:
    _analysis_tab()
