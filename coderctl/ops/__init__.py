"""Operations that change things: backups, retention, restore.

Each operation is a small state machine: it records its steps in a Journal, changes nothing before its
checks pass, and on failure walks back what it did. A failure it cannot walk back is exit 3, with the exact
commands a person needs.
"""
