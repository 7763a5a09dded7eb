"""Writes of the workflows app: runs, scoring, hygiene, rotation. Status changes go through
contacts.services (the one status service)."""


# --- workflows, enrollments, runs (issue 5, items 2-6, 11) ---


# --- engagement scoring (issue 5, item 7) ---


# --- hygiene, rotation, savings (issue 5, items 8-10) ---
