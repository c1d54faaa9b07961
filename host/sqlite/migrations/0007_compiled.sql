-- Compiled forms of stored components, one per engine (PluginStore::
-- put_compiled): a worker loads a component another machine compiled
-- instead of compiling it again. Deleted with the component.

CREATE TABLE compiled (
    digest   TEXT NOT NULL,
    engine   TEXT NOT NULL,
    artifact BLOB NOT NULL,
    PRIMARY KEY (digest, engine)
) WITHOUT ROWID;
