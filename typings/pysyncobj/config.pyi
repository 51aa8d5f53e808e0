from collections.abc import Callable
from typing import Any

class FAIL_REASON:
    SUCCESS: int
    QUEUE_FULL: int
    MISSING_LEADER: int
    DISCARDED: int
    NOT_LEADER: int
    LEADER_CHANGED: int
    REQUEST_DENIED: int
    UNKNOWN_OUTCOME: int

class SyncObjConf:
    password: str | None
    autoTick: bool
    useFork: bool
    journalFile: str | None
    fullDumpFile: str | None
    dynamicMembershipChange: bool
    raftMinTimeout: float
    raftMaxTimeout: float
    appendEntriesPeriod: float
    appendEntriesUseBatch: bool
    connectionTimeout: float
    connectionRetryTime: float
    bindAddress: str | None
    onStateChanged: Callable[[int, int], None] | None
    def __init__(self, **kwargs: Any) -> None: ...
    def validate(self) -> None: ...
