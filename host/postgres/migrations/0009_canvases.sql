-- Canvas definitions (CanvasStore): chain, group and chord trees, written
-- once when enqueued, read by the workers that move them on.

CREATE TABLE canvases (
    id         TEXT COLLATE "C" PRIMARY KEY,
    definition TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
