/* children.c - see children.h. */
#include "children.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

struct Children {
        sigset_t mask;
        Child *list;
        size_t n, cap;
};

Children *children_new(const sigset_t *mask)
{
        Children *ch = xcalloc(1, sizeof *ch);

        ch->mask = *mask;
        return ch;
}

Children *children_free(Children *ch)
{
        if (ch) {
                free(ch->list);
                free(ch);
        }
        return NULL;
}

size_t children_count(const Children *ch, ChildType type)
{
        size_t n = 0;

        for (size_t i = 0; i < ch->n; i++)
                n += ch->list[i].type == type;
        return n;
}

size_t children_total(const Children *ch) { return ch->n; }

const Child *children_at(const Children *ch, size_t i) { return i < ch->n ? &ch->list[i] : NULL; }

bool children_chunk_running(const Children *ch, int64_t file_id, int no)
{
        for (size_t i = 0; i < ch->n; i++)
                if (ch->list[i].type == CHILD_CHUNK && ch->list[i].file_id == file_id && ch->list[i].chunk_no == no)
                        return true;
        return false;
}

static void children_add(Children *ch, Child c)
{
        if (ch->n == ch->cap) {
                ch->cap = ch->cap ? ch->cap * 2 : 8;
                ch->list = xrealloc(ch->list, ch->cap * sizeof *ch->list);
        }
        ch->list[ch->n++] = c;
}

bool children_take(Children *ch, pid_t pid, Child *ret)
{
        for (size_t i = 0; i < ch->n; i++)
                if (ch->list[i].pid == pid) {
                        *ret = ch->list[i];
                        ch->list[i] = ch->list[--ch->n];
                        return true;
                }
        return false;
}

void children_signal(const Children *ch, int sig, int64_t file_id)
{
        for (size_t i = 0; i < ch->n; i++)
                if (file_id < 0 || (ch->list[i].type == CHILD_CHUNK && ch->list[i].file_id == file_id))
                        kill(ch->list[i].pid, sig);
}

/* Forks a child that execs /proc/self/exe with argv; it dies with the
 * supervisor (PR_SET_PDEATHSIG). The pid, or -errno. */
static pid_t children_fork(Children *ch, char *const argv[])
{
        pid_t parent = getpid();
        pid_t pid = fork();

        if (pid < 0)
                return -errno;
        if (pid == 0) {
                sigprocmask(SIG_SETMASK, &ch->mask, NULL);
                if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
                        _exit(127);
                execv("/proc/self/exe", argv);
                _exit(127);
        }
        return pid;
}

pid_t children_start(Children *ch, const char *config_path, Child c, const char *const args[])
{
        char *argv[12] = { "ingestd", "-c", (char *)config_path };
        size_t n = 3;

        for (size_t i = 0; args[i] && n < 10; i++)
                argv[n++] = (char *)args[i];
        if (log_get_level() >= LOG_DEBUG)
                argv[n++] = "--debug";
        argv[n] = NULL;
        c.started = now_monotonic();
        c.pid = children_fork(ch, argv);
        if (c.pid > 0)
                children_add(ch, c);
        return c.pid;
}
