-- ingestd state schema. Applied at every start-up inside one transaction under
-- an advisory lock; every statement is idempotent. The products table itself is
-- created by the daemon because its primary key follows the `key` setting.
CREATE SCHEMA IF NOT EXISTS ingest;

-- One row per registered file; id is the arrival sequence number that versions rows.
CREATE TABLE IF NOT EXISTS ingest.files (
    id              bigserial PRIMARY KEY,
    name            text NOT NULL,          -- original file name (escaped to UTF-8)
    kind            text NOT NULL CHECK (kind IN ('ingest', 'update')),
    path            text,                   -- name under processing/, done/, failed/
    sha256          text,
    size            bigint,
    state           text NOT NULL DEFAULT 'new'
                    CHECK (state IN ('new', 'loading', 'done', 'failed')),
    chunks          integer NOT NULL DEFAULT 0,
    lanes           integer NOT NULL DEFAULT 1,  -- key lanes per byte range (see ingest.chunks)
    data_rows       bigint NOT NULL DEFAULT 0,
    rows_loaded     bigint NOT NULL DEFAULT 0,
    rows_rejected   bigint NOT NULL DEFAULT 0,
    rows_superseded bigint NOT NULL DEFAULT 0,
    registered_at   timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    aggregated_at   timestamptz,            -- products_agg refreshed after this file finished
    error           text
);
CREATE INDEX IF NOT EXISTS files_name ON ingest.files (name, id);
CREATE INDEX IF NOT EXISTS files_active ON ingest.files (id) WHERE state IN ('new', 'loading');
-- the metrics' reads: files a refresh stamped, files waiting for one (NULL)
CREATE INDEX IF NOT EXISTS files_aggregated ON ingest.files (aggregated_at);

-- One row per chunk; state 'done' is written in the worker's load transaction,
-- so it is the checkpoint: a chunk is committed exactly once. A chunk is one
-- byte range of the file and one key lane: the rows whose sku hashes to `lane`
-- (rejects go to lane 0). Chunk `no` follows chunk `no - lanes` of the same lane,
-- and chunks of one lane apply in file order; different lanes hold different
-- skus and apply in parallel.
CREATE TABLE IF NOT EXISTS ingest.chunks (
    file_id         bigint NOT NULL REFERENCES ingest.files (id) ON DELETE CASCADE,
    no              integer NOT NULL,
    start_offset    bigint NOT NULL,
    end_offset      bigint NOT NULL,
    first_line      bigint NOT NULL,
    lane            integer NOT NULL DEFAULT 0,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'loading', 'done', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt    timestamptz,
    worker_pid      integer,
    rows_loaded     bigint NOT NULL DEFAULT 0,
    rows_rejected   bigint NOT NULL DEFAULT 0,
    rows_superseded bigint NOT NULL DEFAULT 0,
    started_at      timestamptz,
    finished_at     timestamptz,
    error           text,
    PRIMARY KEY (file_id, no)
);

-- Rows that could not load, with where they are in the file and why.
CREATE TABLE IF NOT EXISTS ingest.rejects (
    file_id         bigint NOT NULL REFERENCES ingest.files (id) ON DELETE CASCADE,
    chunk_no        integer NOT NULL,
    line            bigint NOT NULL,
    byte_offset     bigint NOT NULL,
    reason          text NOT NULL,
    raw             bytea                   -- the record as in the file (first 4 KiB)
);
-- Why, as a fixed code (daemon/lib/rejects.h: field_count, quote, utf8, nul,
-- empty_sku, field_too_long, unknown_sku); NULL for rows from before codes.
ALTER TABLE ingest.rejects ADD COLUMN IF NOT EXISTS code text;
ALTER TABLE ingest.files ADD COLUMN IF NOT EXISTS lanes integer NOT NULL DEFAULT 1;
ALTER TABLE ingest.chunks ADD COLUMN IF NOT EXISTS lane integer NOT NULL DEFAULT 0;

CREATE INDEX IF NOT EXISTS rejects_file ON ingest.rejects (file_id, line);

-- Changes of products_agg by name, written by each chunk's load transaction
-- and folded into products_agg (and deleted) by the refresh after the load.
-- A NULL name asks for a recount (the chunk changed too many names to list).
CREATE TABLE IF NOT EXISTS ingest.agg_delta (
    name            text COLLATE "C",
    delta           bigint NOT NULL
);

CREATE INDEX IF NOT EXISTS agg_delta_recount ON ingest.agg_delta ((name IS NULL)) WHERE name IS NULL;

-- A first load into an empty products defers products' primary key: the
-- constraint is dropped before the file's first chunk (deferred_key = its name)
-- and built again, in one transaction, once the file's chunks are all done or
-- the file failed. key_decided: the choice was made for this file.
ALTER TABLE ingest.files ADD COLUMN IF NOT EXISTS key_decided boolean NOT NULL DEFAULT false;
ALTER TABLE ingest.files ADD COLUMN IF NOT EXISTS deferred_key text;
CREATE INDEX IF NOT EXISTS files_deferred_key ON ingest.files (id) WHERE deferred_key IS NOT NULL;

-- Rows of a deferred-key load whose key a later row of the file may still
-- have (the chunk's lookahead could not tell); committed with their chunk and
-- applied, newest version first, when the key is built.
CREATE TABLE IF NOT EXISTS ingest.deferred_rows (
    file_id         bigint NOT NULL REFERENCES ingest.files (id) ON DELETE CASCADE,
    chunk_no        integer NOT NULL,
    sku             text COLLATE "C" NOT NULL,
    name            text COLLATE "C" NOT NULL,
    description     text,
    file_seq        bigint NOT NULL,
    line            bigint NOT NULL
);

-- How the plan child gets on with a new file (bytes of size scanned), and
-- which way each chunk applied its rows (batches, sorted, deferred; see ingestd(8)).
ALTER TABLE ingest.files ADD COLUMN IF NOT EXISTS planned_bytes bigint NOT NULL DEFAULT 0;
ALTER TABLE ingest.chunks ADD COLUMN IF NOT EXISTS apply_path text;
-- written and never read before: claims get an owner and a lease with several nodes
ALTER TABLE ingest.chunks DROP COLUMN IF EXISTS lease_until;

-- Several nodes share one database (docs/SCALING.md). Each supervisor keeps
-- its row here, heartbeat_at renewed every cluster.heartbeat seconds; a node
-- silent for cluster.takeover_after is dead: another node deletes its row and
-- releases its chunks (those whose row lock is not held by a live transaction).
CREATE TABLE IF NOT EXISTS ingest.nodes (
    node            text PRIMARY KEY,       -- cluster.node
    pid             integer NOT NULL,
    started_at      timestamptz NOT NULL DEFAULT now(),
    heartbeat_at    timestamptz NOT NULL DEFAULT now(),
    version         text NOT NULL,
    workers         integer NOT NULL
);
-- chunk workers running on the node, as of its last heartbeat
ALTER TABLE ingest.nodes ADD COLUMN IF NOT EXISTS busy integer NOT NULL DEFAULT 0;
-- The leader's lease: the node that scans the folders, registers and plans
-- files and refreshes products_agg, until `until` (renewed with the heartbeat).
CREATE TABLE IF NOT EXISTS ingest.leader (
    one             boolean PRIMARY KEY DEFAULT true CHECK (one),
    node            text NOT NULL,
    until           timestamptz NOT NULL
);
-- The node that holds a loading chunk (claimed before its worker forks) and,
-- once done, the node that committed it. The claim's lease is its node's
-- heartbeat; attempts, counted at the claim, tells one claim from the next.
ALTER TABLE ingest.chunks ADD COLUMN IF NOT EXISTS node text;
CREATE INDEX IF NOT EXISTS chunks_loading ON ingest.chunks (node) WHERE state = 'loading';

-- The last refresh of products_agg that committed (one row): when, and how
-- long it took. Written in the refresh's transaction.
CREATE TABLE IF NOT EXISTS ingest.aggregate_runs (
    one             boolean PRIMARY KEY DEFAULT true CHECK (one),
    refreshed_at    timestamptz NOT NULL,
    seconds         double precision NOT NULL
);

-- Retention (retention.h): a done file's chunks and rejects removed
-- (pruned_at) and its copy in done/ deleted (removed_at); the row stays.
ALTER TABLE ingest.files ADD COLUMN IF NOT EXISTS pruned_at timestamptz;
ALTER TABLE ingest.files ADD COLUMN IF NOT EXISTS removed_at timestamptz;
CREATE INDEX IF NOT EXISTS files_unpruned ON ingest.files (finished_at) WHERE state = 'done' AND pruned_at IS NULL;
CREATE INDEX IF NOT EXISTS files_unremoved ON ingest.files (finished_at) WHERE state = 'done' AND removed_at IS NULL;

CREATE TABLE IF NOT EXISTS public.products_agg (
    name            text COLLATE "C" PRIMARY KEY,   -- byte order: see products
    no_of_products  bigint NOT NULL
);
