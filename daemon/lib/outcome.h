/* outcome.h - how a child's work ended, at the boundary between a child
 * (worker, plan) and the supervisor, mapped once to the exit-code contract
 * (sysexits.h), and how an errno is classified into one. */
#pragma once

typedef enum Outcome {
        OUTCOME_DONE,     /* committed, or already committed before */
        OUTCOME_RETRY,    /* failed this time (database, EMFILE, ENOMEM, EIO, ...): retry with backoff */
        OUTCOME_BAD_FILE, /* the file itself cannot load: fail it */
        OUTCOME_NOT_RUN,  /* gave up before trying (stop, predecessor failed): no attempt used */
        OUTCOME_CRASHED,  /* killed by a signal or an unknown exit code: retry with backoff */
        OUTCOME_NO_SPACE, /* a disk is full (SQLSTATE 53100, ENOSPC): retry with backoff, no attempt used */
} Outcome;

/* The exit status a child returns for an outcome. */
int outcome_exit_code(Outcome o);
/* The outcome of a child's wait status (waitpid's). */
Outcome outcome_of_wait_status(int status);
/* An error opening, mapping or reading the file, as a negative or positive
 * errno: EMFILE, ENFILE, ENOMEM, EAGAIN, EIO (and anything not known to be
 * about the file) retry; ENOENT, EACCES, EPERM, ELOOP, EISDIR and EINVAL (bad
 * data) fail the file. */
Outcome outcome_of_errno(int e);
const char *outcome_name(Outcome o);
/* A child's exit code, or minus the signal that killed it, for the log. */
int outcome_wait_code(int status);
