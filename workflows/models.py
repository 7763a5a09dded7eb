# Workflows (criteria, enrollments, runs, scoring, hygiene, rotation) arrive with their own issue.


# --- workflows, enrollments, runs (issue 5, items 2-6, 11) ---


# --- engagement scoring (issue 5, item 7) ---


# --- hygiene, rotation, savings (issue 5, items 8-10) ---
