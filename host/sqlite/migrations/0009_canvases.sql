-- Canvas definitions (CanvasStore): chain, group and chord trees, written
-- once when enqueued, read by the workers that move them on.

CREATE TABLE canvases (
    id         TEXT PRIMARY KEY,
    definition TEXT NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;
