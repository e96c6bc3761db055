"""How a winner reaches running workflows: versioned resource sets (publish, history,
rollback), the schedule that trains at an interval, and trainer records kept in the store."""
