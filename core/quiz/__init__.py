"""The "Which image is real?" quiz: rounds, fair serving, answers, statistics, machine judge."""
