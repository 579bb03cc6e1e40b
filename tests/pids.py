import os


def pid_alive(pid: int) -> bool:
    """Whether a test session with this pid still runs: its leftovers are not ours to remove."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True
