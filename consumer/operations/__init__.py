"""Operations on a running deployment: preflight checks, the dead-letter topic, replays."""
