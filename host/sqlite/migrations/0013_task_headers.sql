-- Each job's headers on its record (JSON `[["name", "value"], ...]`, NULL
-- when it has none): shown with the job, and listed by
-- (`xylem task ls --header`, `GET /api/jobs?header=`).

ALTER TABLE tasks ADD COLUMN headers TEXT;
