/* planfile.h - the plan child (`ingestd --plan FILE_ID`): plans a file that
 * the supervisor registered, so that the supervisor's loop never blocks on a
 * scan of a large file. Its progress goes into ingest.files (planned_bytes of
 * size), where the supervisor's STATUS and `ingestctl --wait` read it. */
#pragma once
#include "config.h"
#include "outcome.h"

#include <stdint.h>

/* Plans file `id` (state new): its chunks are stored and it moves to
 * loading, or a file that cannot load is failed with the reason and moved to
 * failed/ (both OUTCOME_DONE: the file's fate is recorded). OUTCOME_RETRY
 * when planning could not run this time (the database, EMFILE, ENOMEM, ...). */
Outcome planfile_run(const Config *cfg, int64_t id);
