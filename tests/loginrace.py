"""One process of the sign-in race test (tests/test_login_race.py).

``python -m tests.loginrace NAME PASSWORD THREADS`` signs in as NAME from THREADS threads
at once, through the real ``accounts.authenticate``, against the database that
``SYNTHLAB_HOME`` / ``SYNTHLAB_DB_URL`` name. It prints ``ready`` once everything is
imported and connected, starts all threads when a line arrives on stdin (so several
processes start together), and prints one JSON list of outcomes: ``ok``, ``wrong``
(the password was checked) or ``locked`` (refused before any check).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable

from core.config import get_settings
from core.db.engine import init_db
from core.users import accounts


def attempt(name: str, password: str) -> str:
    try:
        accounts.authenticate(name, password)
    except accounts.LoginRefused as exc:
        return "locked" if "too many" in str(exc) else "wrong"
    return "ok"


def race(name: str, passwords: list[str], before_start: Callable[[], object] = lambda: None,
         ) -> list[str]:
    """Every password tried from its own thread; all threads are started and waiting
    before ``before_start`` returns, then released together."""
    outcomes: list[str] = []
    lock = threading.Lock()
    go = threading.Event()

    def one(password: str) -> None:
        go.wait()
        result = attempt(name, password)
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=one, args=(p,)) for p in passwords]
    for thread in threads:
        thread.start()
    before_start()
    go.set()
    for thread in threads:
        thread.join()
    return outcomes


def main(argv: list[str]) -> int:
    name, password, count = argv[0], argv[1], int(argv[2])
    init_db(get_settings())
    accounts.recent_failures(name)  # connect now, not in the race

    def ready_then_wait() -> None:
        print("ready", flush=True)
        sys.stdin.readline()

    print(json.dumps(race(name, [password] * count, ready_then_wait)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
