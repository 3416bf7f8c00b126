/* outcome.c - see outcome.h. The one table of the exit-code contract. */
#include "outcome.h"

#include <errno.h>
#include <sys/wait.h>
#include <sysexits.h>

static const struct {
        Outcome outcome;
        int code;
        const char *name;
} contract[] = {
        { OUTCOME_DONE, 0, "done" },
        { OUTCOME_RETRY, EX_TEMPFAIL, "retry" },
        { OUTCOME_BAD_FILE, EX_DATAERR, "bad file" },
        { OUTCOME_NOT_RUN, EX_UNAVAILABLE, "not run" },
        { OUTCOME_CRASHED, EX_SOFTWARE, "crashed" },
        { OUTCOME_NO_SPACE, EX_CANTCREAT, "no space" },
};

#define N_CONTRACT (sizeof contract / sizeof *contract)

int outcome_exit_code(Outcome o)
{
        for (size_t i = 0; i < N_CONTRACT; i++)
                if (contract[i].outcome == o)
                        return contract[i].code;
        return EX_SOFTWARE;
}

const char *outcome_name(Outcome o)
{
        for (size_t i = 0; i < N_CONTRACT; i++)
                if (contract[i].outcome == o)
                        return contract[i].name;
        return "unknown";
}

Outcome outcome_of_wait_status(int status)
{
        if (!WIFEXITED(status))
                return OUTCOME_CRASHED;
        for (size_t i = 0; i < N_CONTRACT; i++)
                if (contract[i].code == WEXITSTATUS(status))
                        return contract[i].outcome;
        return OUTCOME_CRASHED;
}

Outcome outcome_of_errno(int e)
{
        switch (e < 0 ? -e : e) {
        case 0: return OUTCOME_DONE;
        case ENOENT:
        case EACCES:
        case EPERM:
        case ELOOP:
        case EISDIR:
        case EINVAL: return OUTCOME_BAD_FILE;
        default: /* EMFILE, ENFILE, ENOMEM, EAGAIN, EIO, a database error (-EIO), ... */ return OUTCOME_RETRY;
        }
}

int outcome_wait_code(int status) { return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status); }
