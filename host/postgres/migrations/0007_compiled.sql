-- Compiled forms of stored components, one per engine (PluginStore::
-- put_compiled): a worker loads a component another machine compiled
-- instead of compiling it again. Deleted with the component.

CREATE TABLE compiled (
    digest   TEXT COLLATE "C" NOT NULL REFERENCES plugins (digest) ON DELETE CASCADE,
    engine   TEXT COLLATE "C" NOT NULL,
    artifact BYTEA NOT NULL,
    PRIMARY KEY (digest, engine)
);
