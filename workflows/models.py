# Workflows (criteria, enrollments, runs, scoring, hygiene, rotation) arrive with their own issue.
