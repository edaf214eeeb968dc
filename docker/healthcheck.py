"""Container health checks: ``api`` asks GET /health; ``flower`` asks for its login challenge."""

import os
import sys
import urllib.error
import urllib.request


def answers(url: str, healthy_statuses: set[int]) -> bool:
    """Return whether ``url`` answers with one of ``healthy_statuses`` within four seconds."""
    try:
        with urllib.request.urlopen(url, timeout=4) as response:
            return response.status in healthy_statuses
    except urllib.error.HTTPError as error:
        return error.code in healthy_statuses
    except OSError:
        return False


def main(role: str) -> int:
    """Return 0 when the role's process answers, 1 otherwise."""
    if role == "api":
        ok = answers(f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/health", {200})
    elif role == "flower":
        # Flower behind basic auth answers 401 to an anonymous request when it is up.
        ok = answers(f"http://127.0.0.1:{os.environ.get('FLOWER_PORT', '5555')}/", {401})
    else:
        raise SystemExit(f"no health check for role {role!r}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "api"))
